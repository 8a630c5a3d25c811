"""`storyloom scene` end to end: real dev server, both emulators and a worker, as processes over
sockets, driven through the CLI the way a user runs it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from starter.devserver import DevServer, start_dev_server
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.processes import CLI
from tests.fixtures.processes import alive as _alive
from tests.fixtures.processes import answers as _answers
from tests.fixtures.processes import polled as _polled
from tests.fixtures.processes import spawn as _spawn
from tests.fixtures.processes import stop as _wait
from workflows_temporal.contracts import SceneResult
from workflows_temporal.policies import (
    DB_QUEUE,
    IMAGE_QUEUE,
    LLM_QUEUE,
    SCENE_WORKFLOW_QUEUE,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

DIRECTION = "A lighthouse keeper finds a talking fox"
STEPS = ["load_context", "write_scene", "save_node", "extract_cast", "upsert_characters",
         "render", "attach_image"]


@dataclass
class Stack:
    """The running services, their URLs, and the environment a CLI process needs."""

    server: DevServer
    client: Client
    data_dir: Path
    ollama_url: str
    comfy_url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def db_file(self) -> Path:
        return self.data_dir / "storyloom.db"

    async def storyloom(self, *args: str, timeout: float = 45.0) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args], env=self.env, capture_output=True, text=True,
            timeout=timeout,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("scene-cli")
    data_dir = root / "data"
    (data_dir / "logs").mkdir(parents=True)
    server = await start_dev_server(root / "temporal", address=f"127.0.0.1:{free_port()}",
                                    headless=True)
    ollama_port, comfy_port = free_port(), free_port()
    env = {
        **os.environ,
        "STORYLOOM_DATA_DIR": str(data_dir),
        "STORYLOOM_TEMPORAL_ADDRESS": server.address,
        "STORYLOOM_TEMPORAL_NAMESPACE": "default",
        "STORYLOOM_OLLAMA_URL": f"http://127.0.0.1:{ollama_port}",
        "STORYLOOM_COMFYUI_URL": f"http://127.0.0.1:{comfy_port}",
        "STORYLOOM_LOG_JSON": "1",
    }
    env.pop("OLLAMA_HOST", None)
    env.pop("TEMPORAL_ADDRESS", None)
    logs = data_dir / "logs"
    procs = {
        "ollama": _spawn(["emulate", "ollama", "--port", str(ollama_port), "--time-scale",
                          "0.02"], env, logs / "t-ollama.out"),
        "comfyui": _spawn(["emulate", "comfyui", "--comfy-port", str(comfy_port), "--root",
                           str(root / "comfy"), "--time-scale", "0.02"], env,
                          logs / "t-comfyui.out"),
        "worker": _spawn(["worker", "--role", "all"], env, logs / "t-worker.out"),
    }
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    stack = Stack(server, client, data_dir, env["STORYLOOM_OLLAMA_URL"],
                  env["STORYLOOM_COMFYUI_URL"], env, procs)

    async def ready() -> bool:
        for name, proc in procs.items():
            _alive(proc, logs / f"t-{name}.out")
        checks = [await _answers(stack.ollama_url + "/api/version"),
                  await _answers(stack.comfy_url + "/system_stats"),
                  await _polled(client, SCENE_WORKFLOW_QUEUE,
                                TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)]
        for queue in (LLM_QUEUE, DB_QUEUE, IMAGE_QUEUE):
            checks.append(await _polled(client, queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        return all(checks)

    try:
        await wait_until(ready, timeout=30.0, interval=0.1, what="emulators and worker")
        yield stack
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        worker_code = await asyncio.to_thread(_wait, procs["worker"])
        for proc in procs.values():
            await asyncio.to_thread(_wait, proc)
        server.stop()
    # A worker stopped by SIGTERM drains and exits cleanly (not 134: notes §6).
    assert worker_code == 0, (logs / "t-worker.out").read_text()[-3000:]


def _node_row(db_file: Path, node_id: str) -> dict[str, Any]:
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
    assert row is not None, f"node {node_id} is not in {db_file}"
    return dict(row)


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


def _generations(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests that make the model produce text (an unload has no prompt)."""
    return [r["body"] for r in requests
            if r["path"] in ("/api/generate", "/api/chat") and isinstance(r["body"], dict)
            and (r["body"].get("prompt") or r["body"].get("messages"))]


async def test_scene_is_written_saved_illustrated_and_traced(stack: Stack) -> None:
    llm_before = await _llm_requests(stack.ollama_url)
    comfy_before = await _stats(stack.comfy_url)

    run = await stack.storyloom("scene", DIRECTION, "--json")

    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)  # stdout is the JSON and nothing else
    assert result.image_status == "done"
    assert result.title
    row = _node_row(stack.db_file, result.node_id)
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

    calls = _generations((await _llm_requests(stack.ollama_url))[len(llm_before):])
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


async def test_failed_render_is_a_state_not_a_failed_scene(stack: Stack) -> None:
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
    row = _node_row(stack.db_file, node_id)
    assert row["image_status"] == "failed"
    assert "KSampler" in (row["image_error"] or "")
    assert row["image_path"] is None


async def test_no_illustrate_skips_the_image(stack: Stack) -> None:
    comfy_before = await _stats(stack.comfy_url)
    run = await stack.storyloom("scene", DIRECTION, "--no-illustrate", "--json")

    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    assert result.image_status == "skipped" and result.image_path is None
    assert _node_row(stack.db_file, result.node_id)["image_status"] == "skipped"
    assert (await _stats(stack.comfy_url))["submitted"] == comfy_before["submitted"]
    summaries = await _activity_summaries(stack.client, result.workflow_id)
    # No image steps; story memory (issue 6) still embeds and stores the scene's summary.
    assert set(summaries) == {"load_context", "write_scene", "save_node", "embed_texts",
                              "store_embedding"}
