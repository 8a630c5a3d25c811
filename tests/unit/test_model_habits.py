"""Real models' habits against the LLM activities, over sockets to the emulator (issue 11):
thinking models, structured output wrapped as small models wrap it, answers without text, and
heartbeats that keep going while a slow model is silent."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.errors import BadRequest
from activities.ollama.activities import LlmActivities
from activities.ollama.client import OllamaClient
from activities.ollama.thinking import CapabilityCache
from emulators.ollama import OllamaEmulator
from workflows_temporal.contracts import ExtractCastInput, WriteProgress, WriteSceneInput

SCENE = WriteSceneInput(
    workflow_id="wf-1", model="qwen3", seed=11,
    premise="On a storm coast, the keeper Mira guards a lighthouse with her brother Tobias.",
    direction="A ship founders and the keeper Mira rows out to it.",
)
CAST = ExtractCastInput(
    workflow_id="wf-1", model="qwen3", seed=2,
    text="At the dock the keeper Mira hauled the rope while Tobias and old Jonas watched.",
)


@pytest.fixture
async def llm(ollama_emulator: OllamaEmulator) -> AsyncIterator[LlmActivities]:
    async with OllamaClient(ollama_emulator.url) as client:
        yield LlmActivities(client, heartbeat_every_s=0.05)


def _generations(emulator: OllamaEmulator) -> list[dict[str, object]]:
    return [b for p, b in emulator.requests if p == "/api/generate" and b.get("prompt")]


async def test_thinking_model_is_told_not_to_think_and_answers_in_response(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"answer_in_thinking": ["qwen3"]})
    scene = await ActivityEnvironment().run(llm.write_scene, SCENE)
    cast = await ActivityEnvironment().run(llm.extract_cast, CAST)
    assert len(scene.text) > 200 and scene.title != "Untitled"
    assert {c.name for c in cast.characters} == {"Mira", "Tobias", "Jonas"}
    calls = _generations(ollama_emulator)
    assert len(calls) == 3 and all(c["think"] is False for c in calls)  # scene, summary, cast
    # capabilities are asked once per model, and a model that cannot think gets no `think`
    await ActivityEnvironment().run(llm.extract_cast, CAST.model_copy(update={"model": "llama3.2"}))
    assert "think" not in _generations(ollama_emulator)[-1]
    shows = [b["model"] for p, b in ollama_emulator.requests if p == "/api/show"]
    assert shows == ["qwen3", "llama3.2"]


async def test_answer_only_in_thinking_is_a_final_error_that_says_so(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    # A model that thinks whatever it is told (gpt-oss style) and answers only in `thinking`.
    ollama_emulator.set_faults({"answer_in_thinking": ["qwen3"], "think_always": ["qwen3"]})
    for activity, inp in ((llm.write_scene, SCENE), (llm.extract_cast, CAST)):
        with pytest.raises(ApplicationError) as info:
            await ActivityEnvironment().run(activity, inp)
        assert info.value.type == "EmptyAnswer" and info.value.non_retryable
        assert "in `thinking`" in info.value.message and "qwen3" in info.value.message
    assert len(_generations(ollama_emulator)) == 2  # nothing saved, nothing retried here


async def test_a_fallback_model_writes_when_the_thinking_model_answers_nothing(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"answer_in_thinking": ["qwen3"], "think_always": ["qwen3"]})
    llm.fallback_models = ["llama3.2"]
    scene = await ActivityEnvironment().run(llm.write_scene, SCENE)
    assert scene.model == "llama3.2" and len(scene.text) > 200
    assert scene.fallback_note and "thinking" in scene.fallback_note


@pytest.mark.parametrize(("reason", "error_type", "final"), [
    ("unload", "ServerError", False),
    ("load", "ServerError", False),
    ("stop", "EmptyAnswer", True),
])
async def test_a_finished_answer_without_text_is_never_a_scene(
    ollama_emulator: OllamaEmulator, llm: LlmActivities, reason: str, error_type: str,
    final: bool,
) -> None:
    ollama_emulator.set_faults({"empty_answers": [reason]})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(llm.write_scene, SCENE.model_copy(update={"model": "llama3.2"}))
    assert info.value.type == error_type and info.value.non_retryable is final
    assert reason in info.value.message
    # the next attempt (a Temporal retry) gets a real answer
    scene = await ActivityEnvironment().run(llm.write_scene, SCENE.model_copy(update={"model": "llama3.2"}))
    assert len(scene.text) > 200


@pytest.mark.parametrize("wrap", ["fence", "string", "prose"])
async def test_wrapped_structured_output_is_unwrapped(
    ollama_emulator: OllamaEmulator, llm: LlmActivities, wrap: str,
) -> None:
    ollama_emulator.set_faults({"structured_wrap": wrap})
    cast = await ActivityEnvironment().run(llm.extract_cast, CAST)
    assert {c.name for c in cast.characters} == {"Mira", "Tobias", "Jonas"} and cast.visual_prompt
    assert len(_generations(ollama_emulator)) == 1


async def test_ambiguous_structured_output_says_what_did_not_fit(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"structured_wrap": "two_objects"})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(llm.extract_cast, CAST)
    assert info.value.type == "StructuredOutputError" and info.value.non_retryable
    assert "2 JSON objects" in info.value.message


async def test_every_llm_activity_heartbeats_while_the_model_is_silent(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    # 1 s before every first byte; the summary and cast calls are not streamed, so nothing
    # arrives during those waits: only a timer can heartbeat through them.
    ollama_emulator.set_faults({"prompt_delay": 100})
    beats: list[float] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(time.monotonic())
    for activity, inp in ((llm.write_scene, SCENE), (llm.extract_cast, CAST)):
        beats.clear()
        started = time.monotonic()
        await env.run(activity, inp)
        ended = time.monotonic()
        gaps = [b - a for a, b in zip([started, *beats], [*beats, ended], strict=True)]
        assert max(gaps) < 0.8, (activity, max(gaps))  # no 1 s silence goes unbeaten


async def test_progress_details_survive_the_timer_beats(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"prompt_delay": 30})
    details: list[object] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *d: details.extend(d)
    scene = await env.run(llm.write_scene, SCENE.model_copy(update={"model": "llama3.2"}))
    progress = [d for d in details if isinstance(d, WriteProgress)]
    assert len(progress) == len(details)  # every beat carries the progress, none is blank
    assert progress[-1].tokens == scene.tokens  # the summary wait re-sends the final count


async def test_think_true_to_a_model_that_cannot_think_is_refused_before_sending(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    with pytest.raises(BadRequest) as info:
        await llm.client.generate("llama3.2", "x", think=True)
    assert "cannot think" in info.value.message and not info.value.retryable
    assert _generations(ollama_emulator) == []  # Ollama would have answered 400
    leveled = await llm.client.generate("qwen3", "x", think="low")
    assert leveled.thinking and _generations(ollama_emulator)[-1]["think"] == "low"


async def test_capabilities_unknown_to_the_server_send_no_think(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    # A server before v0.6.4 has no `capabilities`; a proxy may refuse /api/show with a 4xx.
    async def old_show(model: str) -> dict[str, object]:
        return {"details": {"family": "qwen3"}}

    llm.client.capabilities = CapabilityCache(old_show)
    await llm.client.generate("qwen3", "x")
    assert "think" not in _generations(ollama_emulator)[-1]

    async def refused(model: str) -> dict[str, object]:
        raise BadRequest("HTTP 403: (empty body)", status=403)

    llm.client.capabilities = CapabilityCache(refused)
    await llm.client.generate("qwen3", "x")
    assert "think" not in _generations(ollama_emulator)[-1]
