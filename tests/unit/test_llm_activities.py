"""LLM activities in an ActivityEnvironment against the emulator: heartbeats, fallback, errors."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ollama.activities import LlmActivities
from activities.ollama.client import OllamaClient
from emulators.ollama import OllamaEmulator
from workflows_temporal.contracts import (
    CharacterLook,
    ExtractCastInput,
    FreeVramInput,
    WriteProgress,
    WriteSceneInput,
)

SCENE = WriteSceneInput(
    workflow_id="wf-1", model="llama3.2", seed=11,
    premise="On a storm coast, the keeper Mira guards a lighthouse with her brother Tobias.",
    direction="A ship founders and the keeper Mira rows out to it.",
    summaries=["The lamp failed at dusk.", "Tobias found the spare lens."],
    characters=[CharacterLook(name="Tobias", look="lanky, in a yellow oilskin")],
)


@pytest.fixture
async def llm(ollama_emulator: OllamaEmulator) -> LlmActivities:
    async with OllamaClient(ollama_emulator.url) as client:
        yield LlmActivities(client, fallback_models=["qwen3"], heartbeat_every_s=0.05)


def _env(beats: list[object]) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.extend(details)
    return env


async def test_write_scene_streams_heartbeats_and_sends_the_context(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"load_delay": 30})  # a 0.3 s cold load: timer heartbeats cover it
    beats: list[object] = []
    scene = await _env(beats).run(llm.write_scene, SCENE)
    assert scene.model == "llama3.2" and scene.fallback_note is None and scene.tokens > 100
    assert scene.title and scene.text and not scene.text.startswith(scene.title)
    assert scene.summary and len(scene.summary) < len(scene.text)
    assert "Mira" in scene.text
    progress = [b for b in beats if isinstance(b, WriteProgress)]
    assert progress[0].tokens == 0 and len([b for b in progress if b.tokens == 0]) >= 2
    assert progress[-1].tokens == scene.tokens
    prompt = next(b for p, b in ollama_emulator.requests if p == "/api/generate")["prompt"]
    for fact in ("storm coast", "Tobias found the spare lens.", "yellow oilskin", "rows out"):
        assert fact in prompt
    again = await _env([]).run(llm.write_scene, SCENE)
    assert again == scene  # same seed, same scene


async def test_write_scene_falls_back_when_the_model_is_missing(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"missing_models": ["llama3.2"]})
    scene = await _env([]).run(llm.write_scene, SCENE)
    assert scene.model == "qwen3" and scene.fallback_note
    assert "llama3.2" in scene.fallback_note and "not installed" in scene.fallback_note


async def test_missing_model_without_fallback_is_final_and_lists_installed(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    llm.fallback_models = []
    with pytest.raises(ApplicationError) as info:
        await _env([]).run(llm.write_scene, SCENE.model_copy(update={"model": "llama9"}))
    err = info.value
    assert err.type == "ModelNotFound" and err.non_retryable
    assert "llama3.2:latest" in err.message and "qwen3:latest" in err.message


async def test_busy_server_is_a_retryable_application_error(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    ollama_emulator.set_faults({"busy_next": 1})
    with pytest.raises(ApplicationError) as info:
        await _env([]).run(llm.write_scene, SCENE)
    assert info.value.type == "ServiceBusy" and not info.value.non_retryable


async def test_extract_cast_names_the_people_in_the_text(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    text = "At the dock the keeper Mira hauled the rope while Tobias and old Jonas watched."
    cast = await _env([]).run(llm.extract_cast, ExtractCastInput(
        workflow_id="wf-1", model="llama3.2", text=text, seed=2,
        known_characters=[CharacterLook(name="Tobias", look="lanky, in a yellow oilskin")]))
    names = [c.name for c in cast.characters]
    assert set(names) == {"Mira", "Tobias", "Jonas"} and len(names) == len(set(names))
    assert all(c.look for c in cast.characters) and cast.visual_prompt
    assert "format" in ollama_emulator.requests[-1][1]


async def test_free_llm_vram_unloads_and_confirms(
    ollama_emulator: OllamaEmulator, llm: LlmActivities,
) -> None:
    await llm.client.generate("llama3.2", "warm")
    ollama_emulator.set_faults({"unload_lag": 10})
    await _env([]).run(llm.free_llm_vram, FreeVramInput(model="llama3.2", deadline_s=5))
    assert await llm.client.loaded_models() == []
