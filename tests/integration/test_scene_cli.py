"""`storyloom scene` end to end: real dev server, both emulators and a worker, as processes over
sockets, driven through the CLI the way a user runs it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.fixtures.processes import Services, start_services
from tests.fixtures.records import generations, node_row
from workflows_temporal.contracts import SceneResult

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

DIRECTION = "A lighthouse keeper finds a talking fox"
STEPS = ["load_context", "write_scene", "save_node", "extract_cast", "upsert_characters",
         "render", "attach_image"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """Dev server, both emulators and one worker as processes (tests/fixtures/processes.py)."""
    services = await start_services(tmp_path_factory.mktemp("scene-cli"))
    try:
        yield services
    finally:
        codes = await services.close()
    # A worker stopped by SIGTERM drains and exits cleanly (not 134: notes §6).
    worker_codes = {name: code for name, code in codes.items() if name.startswith("worker-")}
    assert worker_codes and all(code == 0 for code in worker_codes.values()), (
        worker_codes, services.log_of(next(iter(worker_codes))).read_text()[-3000:])


async def _stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        reply = await http.get(url + "/_emulator/stats")
        reply.raise_for_status()
        return dict(reply.json())


async def _llm_requests(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return list((await http.get(url + "/_emulator/requests")).json())


async def _activity_summaries(client: Client, workflow_id: str) -> dict[str, str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found: dict[str, str] = {}
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        name = event.activity_task_scheduled_event_attributes.activity_type.name
        summary = ""
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
            summary = json.loads(event.user_metadata.summary.data)
        found[name] = summary
    return found


async def test_scene_is_written_saved_illustrated_and_traced(stack: Services) -> None:
    llm_before = await _llm_requests(stack.ollama_url)
    comfy_before = await _stats(stack.comfy_url)

    run = await stack.storyloom("scene", DIRECTION, "--json")

    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)  # stdout is the JSON and nothing else
    assert result.image_status == "done"
    assert result.title
    row = node_row(stack.db_file, result.node_id)
    assert len(row["text"]) > 200 and row["title"] == result.title
    assert row["image_status"] == "done" and row["workflow_id"] == result.workflow_id
    image = Path(result.image_path or "")
    assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert hashlib.sha256(image.read_bytes()).hexdigest() == row["image_sha256"]
    assert row["image_sha256"] == result.image_sha256

    summaries = await _activity_summaries(stack.client, result.workflow_id)
    for step in STEPS:
        assert summaries.get(step), f"{step} missing or without summary: {summaries}"
    assert "lighthouse" in summaries["write_scene"].lower()

    calls = generations((await _llm_requests(stack.ollama_url))[len(llm_before):])
    # write_scene streams the scene once and asks for its summary once (stream false);
    # extract_cast makes one JSON-schema call; free_llm_vram's unload has no prompt.
    cast_calls = [c for c in calls if "format" in c]
    summary_calls = [c for c in calls if "format" not in c and c.get("stream") is False]
    scene_calls = [c for c in calls if "format" not in c and c.get("stream") is not False]
    assert (len(scene_calls), len(summary_calls), len(cast_calls)) == (1, 1, 1), calls
    assert DIRECTION in scene_calls[0]["prompt"]
    comfy_after = await _stats(stack.comfy_url)
    assert comfy_after["executed"] - comfy_before["executed"] == 1
    assert comfy_after["submitted"] - comfy_before["submitted"] == 1


async def test_failed_render_is_a_state_not_a_failed_scene(stack: Services) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        (await http.post(stack.comfy_url + "/_emulator/faults",
                         json={"error_at_node": "KSampler"})).raise_for_status()
    try:
        run = await stack.storyloom("scene", DIRECTION)
    finally:
        async with httpx.AsyncClient(timeout=5.0) as http:
            await http.post(stack.comfy_url + "/_emulator/faults", json={})

    assert run.returncode == 0, run.stderr
    assert "image FAILED" in run.stdout and "KSampler" in run.stdout, run.stdout
    node_id = run.stdout.split("node ", 1)[1].split()[0]
    row = node_row(stack.db_file, node_id)
    assert row["image_status"] == "failed"
    assert "KSampler" in (row["image_error"] or "")
    assert row["image_path"] is None


async def test_no_illustrate_skips_the_image(stack: Services) -> None:
    comfy_before = await _stats(stack.comfy_url)
    run = await stack.storyloom("scene", DIRECTION, "--no-illustrate", "--json")

    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    assert result.image_status == "skipped" and result.image_path is None
    assert node_row(stack.db_file, result.node_id)["image_status"] == "skipped"
    assert (await _stats(stack.comfy_url))["submitted"] == comfy_before["submitted"]
    summaries = await _activity_summaries(stack.client, result.workflow_id)
    # No image steps; story memory (issue 6) still embeds and stores the scene's summary.
    assert set(summaries) == {"load_context", "write_scene", "save_node", "embed_texts",
                              "store_embedding"}
