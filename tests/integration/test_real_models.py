"""Scenes with models as people actually run them (issue 11): a thinking model, structured output
wrapped the way small models wrap it, and a slow model that is silent for 15 s before every
first byte. Real dev server (the real 10 s heartbeat timeout of write_scene and extract_cast),
both emulators and a worker as processes, scenes through the CLI; the user's view is asserted:
exit code, text length, picture status, LLM calls and GPU jobs per scene.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.fixtures.processes import Services, start_services
from tests.fixtures.records import generations, node_row
from workflows_temporal.contracts import SceneResult
from workflows_temporal.policies import STEPS

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

DIRECTION = "The keeper Mira rows out to the wreck while her brother Tobias holds the lamp"
OLLAMA_SCALE = 0.02  # the stack's Ollama time scale: fault seconds x 0.02


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    services = await start_services(tmp_path_factory.mktemp("real-models"),
                                    ollama_scale=OLLAMA_SCALE)
    try:
        yield services
    finally:
        await services.close()


async def _scene(stack: Services, faults: dict[str, Any], *args: str,
                 timeout: float = 90.0) -> tuple[SceneResult, dict[str, Any], list[dict[str, Any]],
                                                 int]:
    """Run one illustrated scene under ``faults``; (result, node row, LLM generation bodies,
    GPU jobs executed) for that scene alone."""
    llm_before = len(await stack.emulator_get(stack.ollama_url, "/_emulator/requests"))
    gpu_before = (await stack.emulator_get(stack.comfy_url, "/_emulator/stats"))["executed"]
    await stack.emulator_post(stack.ollama_url, faults)
    try:
        run = await stack.storyloom("scene", DIRECTION, "--json", *args, timeout=timeout)
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    requests = await stack.emulator_get(stack.ollama_url, "/_emulator/requests")
    gpu_after = (await stack.emulator_get(stack.comfy_url, "/_emulator/stats"))["executed"]
    return (result, node_row(stack.db_file, result.node_id), generations(requests[llm_before:]),
            gpu_after - gpu_before)


def _assert_whole_scene(result: SceneResult, row: dict[str, Any], calls: list[dict[str, Any]],
                        gpu_jobs: int) -> None:
    """Text, picture, and exactly one scene, one summary and one cast call, one GPU job."""
    assert len(row["text"]) > 200 and row["title"] != "Untitled", row["text"]
    assert result.image_status == "done", row["image_error"]
    assert row["image_status"] == "done" and Path(row["image_path"]).is_file()
    cast = [c for c in calls if "format" in c]
    summary = [c for c in calls if "format" not in c and c.get("stream") is False]
    scene = [c for c in calls if "format" not in c and c.get("stream") is not False]
    assert (len(scene), len(summary), len(cast)) == (1, 1, 1), calls
    assert gpu_jobs == 1


async def test_thinking_model_that_answers_in_thinking_writes_and_illustrates(
    stack: Services,
) -> None:
    # qwen3 reports the `thinking` capability; with thinking on it puts every answer (prose and
    # JSON) in `thinking` and leaves `response` empty.
    result, row, calls, gpu = await _scene(
        stack, {"answer_in_thinking": ["qwen3"]}, "--model", "qwen3")
    _assert_whole_scene(result, row, calls, gpu)
    assert all(c.get("think") is False for c in calls), calls


async def test_a_scene_answered_only_in_thinking_fails_and_says_so(stack: Services) -> None:
    # A model that thinks whatever it is told (gpt-oss style) and leaves `response` empty: no
    # empty "Untitled" scene is saved, the command exits 1 and says what came back.
    with sqlite3.connect(stack.db_file) as db:
        nodes_before = db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0]
    await stack.emulator_post(stack.ollama_url, {"answer_in_thinking": ["qwen3"],
                                                 "think_always": ["qwen3"]})
    try:
        run = await stack.storyloom("scene", DIRECTION, "--model", "qwen3")
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    assert run.returncode == 1, (run.stdout, run.stderr)
    said = run.stdout + run.stderr
    assert "thinking" in said and "qwen3" in said, said
    with sqlite3.connect(stack.db_file) as db:
        assert db.execute("SELECT COUNT(*) FROM nodes").fetchone()[0] == nodes_before


@pytest.mark.parametrize("wrap", ["fence", "string", "prose"])
async def test_wrapped_structured_output_still_gives_the_picture(
    stack: Services, wrap: str,
) -> None:
    result, row, calls, gpu = await _scene(stack, {"structured_wrap": wrap})
    _assert_whole_scene(result, row, calls, gpu)
    assert row["image_prompt"], row


async def test_ambiguous_structured_output_fails_the_picture_and_says_why(
    stack: Services,
) -> None:
    run_faults = {"structured_wrap": "two_objects"}
    result, row, calls, gpu = await _scene(stack, run_faults)
    assert len(row["text"]) > 200 and result.image_status == "failed" and gpu == 0
    assert "2 JSON objects" in (row["image_error"] or ""), row["image_error"]
    assert len([c for c in calls if "format" in c]) == 1  # final: not retried


async def test_slow_model_silent_15s_before_every_first_byte_finishes_in_one_go(
    stack: Services,
) -> None:
    # Longer than the heartbeat timeout of the LLM steps: only timer heartbeats keep them alive.
    silent_s = 15.0
    for step in ("write_scene", "extract_cast"):
        heartbeat = STEPS[step].heartbeat
        assert heartbeat is not None and heartbeat.total_seconds() < silent_s
    faults = {"prompt_delay": silent_s / OLLAMA_SCALE, "token_delay": 0.02 / OLLAMA_SCALE,
              "response_tokens": 120}
    result, row, calls, gpu = await _scene(stack, faults, timeout=150.0)
    _assert_whole_scene(result, row, calls, gpu)
