"""The emulated story a first-time user reads in the demo: placeholder, but never broken.

The LLM activities run against the Ollama emulator over a socket, as in the demo: titles read
like titles, scenes end on whole sentences, the cast is the premise's people (in any script),
and no instruction word of storyloom's prompts turns into a name or a title.
"""

from __future__ import annotations

import re

import pytest
from temporalio.testing import ActivityEnvironment

from activities.ollama.activities import LlmActivities
from activities.ollama.client import OllamaClient
from emulators.ollama import OllamaEmulator
from workflows_temporal.contracts import ExtractCastInput, WriteSceneInput

PREMISES = [
    "On a stormy night the keeper Mara finds a fox called Ember hiding in the lighthouse",
    "In the old mill Zoë teaches Łukasz to read the river's moods",
    "A lighthouse keeper finds a talking fox",  # no names at all
]
PROMPT_WORDS = {"scene", "story", "title", "prose", "writing", "illustrated", "branching",
                "premise", "finds", "happens", "words", "vivid"}


@pytest.fixture
async def llm(ollama_emulator: OllamaEmulator) -> LlmActivities:
    async with OllamaClient(ollama_emulator.url) as client:
        yield LlmActivities(client, fallback_models=[], heartbeat_every_s=0.05)


@pytest.mark.parametrize("premise", PREMISES)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_emulated_scenes_are_whole_and_about_the_premise(
        llm: LlmActivities, premise: str, seed: int) -> None:
    names = re.findall(r"(?<![.!?] )(?<!^)\b[^\W\d_]*[A-ZÀ-ÖØ-ÞŁ][^\W\d_]+", premise)
    scene = await ActivityEnvironment().run(llm.write_scene, WriteSceneInput(
        workflow_id=f"wf-{seed}", model="llama3.2", seed=seed, premise=premise,
        direction=f"Scene 2: continue the story of {premise}"))

    title_words = {w.lower() for w in re.findall(r"[^\W\d_]+", scene.title)}
    assert not title_words & PROMPT_WORDS, scene.title
    assert 1 <= len(scene.title.split()) <= 6 and not scene.title.endswith("…"), scene.title
    text = scene.text.strip()
    assert text.endswith("."), text[-80:]  # whole sentences: never cut mid-word
    for paragraph in text.split("\n\n"):
        assert re.fullmatch(r"([^.]+\. ?)+", paragraph.strip()), paragraph
    words = {w.lower() for w in re.findall(r"[^\W\d_]+", text)}
    assert not words & (PROMPT_WORDS - {"finds"}), words & PROMPT_WORDS
    for name in names:
        if name != premise.split()[0]:
            assert name in text, (name, text[:300])

    cast = await ActivityEnvironment().run(llm.extract_cast, ExtractCastInput(
        workflow_id=f"wf-{seed}", model="llama3.2", text=text, seed=seed))
    cast_names = [c.name for c in cast.characters]
    premise_words = {w.lower() for w in re.findall(r"[^\W\d_]+", premise)}
    assert cast_names, "the scene has people"
    for name in cast_names:
        assert len(name.split()) <= 2 and name.lower() in premise_words | {
            "traveller", "stranger", "guide"}, (name, cast_names)
    assert all(c.look for c in cast.characters)
    assert cast.visual_prompt.endswith(".") and len(cast.visual_prompt.split()) >= 4


# (premise, its people, its places, its adjectives): names open the premise, follow "In the
# attic,", are in any script; places follow in/to/from; adjectives stand before nouns.
CASTS = [
    ("Zoë and Łukasz find a silver key in Kraków", {"Zoë", "Łukasz"}, {"Kraków"}, {"silver"}),
    ("Ingrid and Tom sail home to Reykjavík under the warm light", {"Ingrid", "Tom"},
     {"Reykjavík"}, {"warm"}),
    ("In the attic, Zoë and Łukasz find the gentle giant's lantern", {"Zoë", "Łukasz"}, set(),
     {"gentle"}),
    ("Ember's warm lamp guides Mara from Oslo to the gentle sea", {"Ember", "Mara"}, {"Oslo"},
     {"warm", "gentle"}),
    ("Ingrid sails from Bergen with the old captain", {"Ingrid"}, {"Bergen"}, {"old"}),
]
_AFTER_A_NOUN = ("beside|near|beyond|towards|under|past|glowed|trembled|settled|drifted|shone|"
                 "creaked|rose|fell|and")


@pytest.mark.parametrize(("premise", "people", "places", "adjectives"), CASTS)
@pytest.mark.parametrize("seed", [1, 2])
async def test_emulated_names_are_the_premise_people_and_adjectives_stay_adjectives(
        llm: LlmActivities, premise: str, people: set[str], places: set[str],
        adjectives: set[str], seed: int) -> None:
    scene = await ActivityEnvironment().run(llm.write_scene, WriteSceneInput(
        workflow_id=f"wf-{seed}", model="llama3.2", seed=seed, premise=premise,
        direction=premise))
    cast = await ActivityEnvironment().run(llm.extract_cast, ExtractCastInput(
        workflow_id=f"wf-{seed}", model="llama3.2", text=scene.text, seed=seed))

    for name in people:
        assert re.search(rf"(?<!\w){name}(?!\w)", scene.text), (name, scene.text[:300])
    cast_names = {c.name for c in cast.characters}
    assert cast_names and cast_names <= people, (cast_names, people)
    for place in places:
        assert place not in cast_names and place not in scene.title, (place, scene.title)
    last = scene.title.split()[-1].lower()
    assert last not in adjectives, scene.title  # "Zoë and the Gentle", "Ember's Warm"
    for adjective in adjectives:  # "watched the warm beside the tide"
        assert not re.search(rf"\b{adjective}(?= (?:{_AFTER_A_NOUN})\b|[.,])", scene.text,
                             re.IGNORECASE), (adjective, scene.text[:400])
