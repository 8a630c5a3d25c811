"""Reading answers back: the one JSON value in what a model wrote, and answers without text."""

from __future__ import annotations

import json

import pytest

from activities.errors import EmptyAnswer, ServerError, StructuredOutputError
from activities.ollama.answers import parse_json_answer, parse_structured, require_text
from emulators.ollama.shapes import wrap_structured
from emulators.ollama.state import parse_faults
from workflows_temporal.contracts import SceneCast

CAST = {"characters": [{"name": "Mira", "look": "tall, in a red scarf"}],
        "setting": "a storm coast", "visual_prompt": "a lighthouse at night"}
PLAIN = json.dumps(CAST)


@pytest.mark.parametrize(("text", "how"), [
    (PLAIN, ""),
    ("```json\n" + PLAIN + "\n```", "fenced"),
    ("```\n" + PLAIN + "```", "fenced"),
    (json.dumps(PLAIN), "string-wrapped"),
    (json.dumps("```json\n" + PLAIN + "\n```"), "string-wrapped+fenced"),
    ("Sure! Here is the JSON:\n" + PLAIN + "\nHope it helps.", "found in prose"),
    ("Here you go: ```json\n" + PLAIN + "\n``` Enjoy {the story}.", "fenced"),
])
def test_one_unambiguous_json_value_is_accepted(text: str, how: str) -> None:
    assert parse_json_answer(text) == (CAST, how)
    assert parse_structured(text, SceneCast).characters[0].name == "Mira"


@pytest.mark.parametrize(("text", "said"), [
    ("", "empty"),
    ("I could not find anyone in this scene.", "no JSON object"),
    (PLAIN + "\n" + PLAIN, "2 JSON objects"),
    ("```json\n" + PLAIN + "\n```\n```json\n" + PLAIN + "\n```", "2 fenced blocks"),
])
def test_no_value_or_several_values_say_so(text: str, said: str) -> None:
    with pytest.raises(StructuredOutputError) as info:
        parse_structured(text, SceneCast)
    assert said in info.value.message and not info.value.retryable


def test_a_value_that_does_not_fit_names_the_fields() -> None:
    bad = "```json\n" + json.dumps({"characters": [{"look": "tall"}], "setting": 3}) + "\n```"
    with pytest.raises(StructuredOutputError) as info:
        parse_structured(bad, SceneCast)
    message = info.value.message
    assert "(fenced) does not fit SceneCast" in message
    assert "characters.0.name: Field required" in message and "setting:" in message


def test_emulator_wraps_match_what_the_parser_accepts() -> None:
    for how in ("fence", "string", "prose"):
        assert parse_json_answer(wrap_structured(PLAIN, how))[0] == CAST
    with pytest.raises(ValueError, match="2 JSON objects"):
        parse_json_answer(wrap_structured(PLAIN, "two_objects"))
    with pytest.raises(ValueError, match="structured_wrap"):
        parse_faults({"structured_wrap": "yaml"})


@pytest.mark.parametrize(("thinking", "reason", "error", "said"), [
    ("", "unload", ServerError, "unloaded instead of answering"),
    ("", "load", ServerError, "loaded instead of answering"),
    ("The scene: Mira rows out...", "stop", EmptyAnswer, "in `thinking`"),
    ("", "stop", EmptyAnswer, "done_reason stop"),
    ("", None, EmptyAnswer, "done_reason absent"),
])
def test_an_answer_without_text_says_what_came_back(
    thinking: str, reason: str | None, error: type[Exception], said: str,
) -> None:
    with pytest.raises(error) as info:
        require_text("  \n", thinking=thinking, done_reason=reason, where="w")
    assert said in str(info.value)
    assert info.value.retryable is (error is ServerError)  # type: ignore[attr-defined]
    require_text("text", thinking=thinking, done_reason=reason)
