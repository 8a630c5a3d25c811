"""Deterministic placeholder prose for the emulator: whole sentences about the prompt's people.

Placeholder, but never broken: every sentence is whole and ends with a full stop; the people
are the names the prompt uses (any script: Zoë, Łukasz, Ærin), and things come from the
prompt's nouns (a word after "the", "a", "her" ...) or from a fixed list; a title reads like
one ("Mara and the Lantern"). The instruction words of storyloom's own prompts ("scene",
"title", "prose", ...) never become names or things.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["cast_of", "count_tokens", "proper_nouns", "prose_sentences", "prose_tokens", "seed_of",
           "sentence", "split_tokens", "story_title", "topic_words"]

_COMMON_TEXT = """
a an the and or but if then when while as at by for from in into of on onto to with without
he she it they we you i me him her them us his hers its their our your my this that these those
there here what which who whom whose where why how not no yes all any each every some many much
more most other such only own same so than too very can will just should would could may might
must shall be is am are was were been being have has had do does did done say said says one two
after before again once also still yet now ever never about above below over under between
write scene scenes story return answer list describe give use keep make reply json title summary
text premise direction style characters character setting name look visual prompt earlier known
prose words word line lines notes commentary sentences sentence phrase illustration picture
face build clothes looks canonical memory happens vivid short first blank matter changed way
illustrated branching summarise naming
"""
_COMMON = set(_COMMON_TEXT.split())
_DETERMINERS = {"the", "a", "an", "her", "his", "their", "its", "our", "my", "your", "this",
                "that", "old", "little"}
_ADJ_ENDINGS = ("y", "ful", "ous", "al", "ic", "ive", "less", "ing", "ed", "en", "ish", "'s")
# Adjectives without a telltale ending: "the warm light" is a light, "the gentle giant" a giant.
_ADJECTIVES = frozenset(["quiet", "silver", "old", "bright", "hollow", "distant", "warm", "narrow", "restless", "golden", "pale", "hidden", "gentle", "strange", "heavy", "big", "small", "large", "tiny", "dark", "cold", "hot", "red", "blue", "green", "black", "white", "grey", "gray", "brown", "young", "new", "long", "tall", "high", "low", "kind", "wild", "soft", "loud", "deep", "wide", "brave", "sad", "happy", "lonely", "wise", "quick", "slow", "dim", "broken", "lost", "last", "great", "tired", "secret", "ancient", "empty", "fierce", "shy", "proud", "clever", "calm", "sweet", "bitter", "cruel", "fair", "free", "rich", "poor", "thin", "thick", "wet", "dry", "faint", "sharp", "blind", "mad", "frozen", "crooked", "little"])
# A capitalised word right after one of these is where something happens ("in Kraków"), not
# who acts, unless the same word also acts elsewhere in the text.
_PLACE_WORDS = frozenset({"in", "at", "to", "from", "of", "near", "across", "into", "towards",
                          "toward", "through", "outside", "inside", "beyond", "around", "over"})
# Sentence openers that are never names even when a verb follows ("Nobody knows").
_STARTERS = frozenset({"nobody", "somebody", "someone", "everyone", "everybody", "anyone",
                       "something", "nothing", "everything", "suddenly", "meanwhile", "once",
                       "later", "slowly", "finally", "soon", "tonight", "today", "tomorrow",
                       "yesterday", "outside", "inside", "somewhere", "sometimes"})
_VERB_WORDS = frozenset({v.split()[0] for v in ("waited", "turned", "whispered", "listened",
                                                "paused", "smiled", "hesitated", "looked",
                                                "walked", "stood", "watched", "ran", "sat",
                                                "went", "came", "found", "saw", "knew")})

_OPENERS = ["At dusk", "For a moment", "Without a word", "Later", "Slowly", "Before long",
            "In the quiet", "At last"]
_NOUNS = ["wind", "lantern", "harbor", "road", "door", "river", "shadow", "window", "garden",
          "stair", "bell", "map", "letter", "fire", "tide", "forest", "tower", "bridge", "storm",
          "candle", "mirror", "path", "sky", "stone", "song"]
_PEOPLE = ["the traveller", "the stranger", "the guide"]
# Who can act in a story without a name: the premise's "keeper" or "fox" become its cast.
_PERSON_NOUNS = frozenset({
    "keeper", "fox", "girl", "boy", "child", "woman", "man", "king", "queen", "prince",
    "princess", "sailor", "captain", "fisherman", "fisherwoman", "baker", "doctor", "witch",
    "wizard", "knight", "soldier", "farmer", "hunter", "thief", "detective", "robot", "dragon",
    "wolf", "cat", "dog", "bird", "owl", "bear", "mouse", "rabbit", "horse", "crow", "raven",
    "ghost", "giant", "monk", "nun", "teacher", "student", "painter", "poet", "singer", "miner",
    "pilot", "traveller", "stranger", "guide", "merchant", "smith", "widow", "orphan", "twins"
})
_VERBS = ["waited", "turned", "whispered", "listened", "paused", "smiled", "hesitated",
          "looked up", "walked on", "stood still"]
_PREPS = ["near", "beside", "beyond", "towards", "under", "past"]
_THINGS_DO = ["glowed", "trembled", "settled", "drifted", "shone", "creaked", "rose", "fell"]
_ADJS = ["quiet", "silver", "old", "bright", "hollow", "distant", "warm", "narrow", "restless",
         "golden", "pale", "hidden", "gentle", "strange", "heavy"]
_LINKS = ["while", "as", "until", "because"]
_WORD = re.compile(r"[^\W\d_](?:[^\W_]|['’\-])*")  # a word in any script, with ' and -
_TOKEN = re.compile(r"\s*\S{1,7}|\s+")


def seed_of(*parts: Any) -> int:
    """A stable 64-bit seed from JSON-able parts (same input, same text, every run)."""
    blob = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def _bare(word: str) -> tuple[str, bool]:
    """``word`` without quote marks and a possessive ``'s`` (and whether it had one)."""
    word = word.strip("'’-")
    for mark in ("'s", "’s"):
        if word.endswith(mark) and len(word) > len(mark):
            return word[: -len(mark)], True
    return word, False


def _opens_as_name(words: list[re.Match[str]], i: int, text: str, possessive: bool) -> bool:
    """Whether the capitalised word opening a sentence is a name: one of a list of names
    ("Zoë and Łukasz", "Ingrid, Tom"), a possessive ("Ember's lamp"), or the subject of a
    verb ("Ingrid sails", "Mara waited")."""
    if possessive:
        return True
    if i + 1 >= len(words):
        return False
    between = text[words[i].end():words[i + 1].start()]
    after = words[i + 1].group(0)
    if after.lower() in ("and", "or") and i + 2 < len(words):
        return _bare(words[i + 2].group(0))[0][:1].isupper()
    if between.strip() == "," and after[:1].isupper() and not words[i].group(0).endswith("ly"):
        return True
    return between.strip() == "" and after.islower() and after not in _COMMON and (
        after in _VERB_WORDS or (len(after) > 3 and after.endswith(("s", "ed"))))


def proper_nouns(text: str, limit: int = 8) -> list[str]:
    """The names of the people in ``text`` (any script), in order of first appearance: its
    capitalised words that are not sentence openers ("In", "The") nor only places ("in
    Kraków"). A word opening a sentence counts when it reads as a name (``_opens_as_name``)."""
    words = list(_WORD.finditer(text))
    candidates: list[tuple[str, bool]] = []  # (name, is it placed where a person acts)
    for i, m in enumerate(words):
        word, possessive = _bare(m.group(0))
        if len(word) < 2 or not word[0].isupper() or word.isupper() or \
                word.lower() in _COMMON or word.lower() in _STARTERS:
            continue
        before = text[: m.start()].rstrip()
        if not before or before[-1] in ".!?:\n\"":
            if not _opens_as_name(words, i, text, possessive):
                continue
            candidates.append((word, True))
            continue
        prev = words[i - 1].group(0).lower() if i else ""
        placed = prev in _PLACE_WORDS and before.endswith(words[i - 1].group(0))
        candidates.append((word, not placed))
    people = {word for word, acts in candidates if acts}
    found: list[str] = []
    for word, _ in candidates:
        if word in people and word not in found:
            found.append(word)
    return found[:limit]


def _is_adjective(word: str) -> bool:
    low = word.lower()
    return low in _ADJECTIVES or (low.endswith(_ADJ_ENDINGS) and low not in _PERSON_NOUNS)


def _nouns(text: str, limit: int = 12) -> list[str]:
    """Lower-case things of the prompt: the word after a determiner ("the lantern") and its
    adjectives ("a stormy night" → night, "the warm light" → light); never an adjective."""
    words = [m.group(0) for m in _WORD.finditer(text)]
    found: list[str] = []
    for i, word in enumerate(words[:-1]):
        if word.lower() not in _DETERMINERS:
            continue
        k = i + 1  # past the adjectives: "the warm, gentle light" is a light
        while k < len(words) and k < i + 4 and _is_adjective(words[k]):
            k += 1
        if k >= len(words) or k == i + 4:
            continue
        pick = words[k].strip("'’-")
        if (pick.islower() and len(pick) > 2 and pick not in _COMMON and pick not in found
                and not pick.endswith(("'s", "’s"))):
            found.append(pick)
        if len(found) >= limit:
            break
    return found


def cast_of(text: str, limit: int = 6) -> list[str]:
    """Who acts in ``text``: its names, or else its people ("keeper", "fox"), in order."""
    names = proper_nouns(text, limit=limit)
    if names:
        return names
    found: list[str] = []
    for m in _WORD.finditer(text):
        word = m.group(0).lower()
        if word in _PERSON_NOUNS and word not in found:
            found.append(word)
    return found[:limit]


def topic_words(text: str, limit: int = 40) -> list[str]:
    """The prompt's names (capitalised) then its things (lower case), so answers are about it."""
    return (proper_nouns(text, limit=limit) + _nouns(text))[:limit]


class _Teller:
    """Sentences and titles about one prompt's people and things, from one random stream."""

    def __init__(self, rng: random.Random, prompt: str) -> None:
        self.rng = rng
        self.names = proper_nouns(prompt, limit=6)
        # A premise without names: its people are "the keeper", "the fox".
        self.people = self.names or [f"the {p}" for p in cast_of(prompt)] or ["the traveller"]
        self.things = [n for n in _nouns(prompt) if n not in _PERSON_NOUNS] or list(_NOUNS[:4])

    def someone(self) -> str:
        if self.rng.random() < 0.9:
            return self.rng.choice(self.people[:4])
        return self.rng.choice(_PEOPLE)

    def thing(self) -> str:
        pool = self.things if self.rng.random() < 0.6 else _NOUNS
        return self.rng.choice(pool)

    def sentence(self) -> str:
        r = self.rng
        kind = r.randrange(4)
        if kind == 0:
            text = f"{self.someone()} {r.choice(_VERBS)} {r.choice(_PREPS)} the {self.thing()}"
        elif kind == 1:
            text = (f"{r.choice(_OPENERS)}, {self.someone()} {r.choice(_VERBS)} "
                    f"{r.choice(_PREPS)} the {r.choice(_ADJS)} {self.thing()}")
        elif kind == 2:
            text = (f"the {r.choice(_ADJS)} {self.thing()} {r.choice(_THINGS_DO)} "
                    f"{r.choice(_LINKS)} {self.someone()} {r.choice(_VERBS)}")
        else:
            first, second = self.someone(), self.someone()
            together = f"{first} and {second}" if first != second else first
            text = f"{together} watched the {self.thing()} {r.choice(_PREPS)} the {self.thing()}"
        return text[0].upper() + text[1:] + "."

    def title(self) -> str:
        thing = self.thing().capitalize()
        if self.names and self.rng.random() < 0.7:
            name = self.rng.choice(self.names[:3])
            return f"{name} and the {thing}" if self.rng.random() < 0.5 else f"{name}'s {thing}"
        return f"The {self.rng.choice(_ADJS).capitalize()} {thing}"


def sentence(seed: int, prompt: str) -> str:
    """One whole placeholder sentence about ``prompt`` (deterministic in both)."""
    return _Teller(random.Random(seed), prompt).sentence()


def story_title(seed: int, prompt: str) -> str:
    """A short title about ``prompt``'s people and things (deterministic in both)."""
    return _Teller(random.Random(seed), prompt).title()


def split_tokens(text: str) -> list[str]:
    """The pseudo-tokenizer: a word with its leading space, long words cut every 7 chars."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def prose_sentences(seed: int, prompt: str) -> Iterator[list[str]]:
    """An endless, deterministic stream of prose about ``prompt``, one token list per whole
    sentence (a title line first when the prompt asks for a title).

    Sentences come from a per-request pool once it has 48 entries, so very long answers (the
    10 MB tests) cost one random draw per sentence and no memory beyond the pool.
    """
    rng = random.Random(seed)
    teller = _Teller(rng, prompt)
    if "title" in prompt.lower():
        yield split_tokens(teller.title() + "\n\n")
    pool: list[str] = []
    cache: dict[tuple[int, str], list[str]] = {}
    count = 0
    while True:
        if len(pool) < 48:
            index = len(pool)
            pool.append(teller.sentence())
        else:
            index = rng.randrange(len(pool))
        count += 1
        sep = "\n\n" if count % rng.randint(4, 6) == 0 else " "
        key = (index, sep)
        if key not in cache:
            cache[key] = split_tokens(pool[index] + sep)
        yield cache[key]


def prose_tokens(seed: int, prompt: str) -> Iterator[str]:
    """The same prose as ``prose_sentences``, token by token."""
    for sent in prose_sentences(seed, prompt):
        yield from sent
