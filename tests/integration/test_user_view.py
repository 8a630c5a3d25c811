"""What a user sees of a running storyloom: terminal progress, the Temporal UI's data, metrics.

Real dev server, both emulators and a worker (with STORYLOOM_METRICS_PORT) as processes; scenes
run through the CLI. The emulators are slowed through their fault endpoints so progress has
something to show (tokens streaming, sampler steps) for a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from rich.console import Console
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from starter.progress import follow
from starter.ui_link import story_query
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.processes import CLI, Services, answers, start_services
from workflows_temporal.contracts import SceneRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

FIRST = "A lighthouse keeper finds a talking fox"
SECOND = "The fox shows the keeper a drowned lantern"
# At time scale 0.02: 50 tokens x 0.03 s and 20 sampler steps x 0.08 s, under 2 s each.
SLOW_LLM = {"token_delay": 1.5, "response_tokens": 50}
SLOW_COMFY = {"step_delay": 4.0}


@dataclass
class Stack:
    """The shared process stack (tests/fixtures/processes.py) plus this module's extras: the
    worker's metrics URL, and CLI runs with a 100-column terminal."""

    services: Services
    metrics_url: str

    @property
    def client(self) -> Client:
        return self.services.client

    @property
    def data_dir(self) -> Path:
        return self.services.data_dir

    async def storyloom(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*CLI, *args], env={**self.services.env, **env},
            capture_output=True, text=True, timeout=60, check=False)

    async def faults(self, llm: dict[str, Any], comfy: dict[str, Any]) -> None:
        await self.services.emulator_post(self.services.ollama_url, llm)
        await self.services.emulator_post(self.services.comfy_url, comfy)


def _metrics_port() -> int:
    """A free port whose successor is free too (the SDK's exporter takes port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two consecutive free ports")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    metrics_port = _metrics_port()
    services = await start_services(
        tmp_path_factory.mktemp("user-view"),
        extra_env={"COLUMNS": "100", "STORYLOOM_METRICS_PORT": str(metrics_port)})
    stack = Stack(services, f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        await wait_until(lambda: answers(stack.metrics_url), timeout=30.0,
                         what="the worker's metrics endpoint")
        yield stack
    finally:
        await services.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def first_scene(stack: Stack) -> tuple[SceneResult, str]:
    """The first scene of a new story, run as a user runs it (stderr is not a TTY: plain)."""
    await stack.faults(SLOW_LLM, SLOW_COMFY)
    try:
        run = await stack.storyloom("scene", FIRST)
    finally:
        await stack.faults({}, {})
    assert run.returncode == 0, run.stderr
    workflow_id = re.search(r"scene (scene-[0-9a-f-]+) started", run.stderr)
    assert workflow_id, run.stderr
    result = await stack.client.get_workflow_handle(
        workflow_id.group(1), result_type=SceneResult).result()
    return result, run.stderr


async def test_plain_progress_names_steps_tokens_sampler_steps_and_time(
        first_scene: tuple[SceneResult, str]) -> None:
    result, stderr = first_scene
    lines = [ln for ln in stderr.splitlines() if " · " in ln]
    assert lines, stderr
    assert all(re.match(r"^\s*\d+\.\ds · ", ln) for ln in lines), lines  # elapsed first
    assert all(len(ln) <= 100 for ln in lines), [ln for ln in lines if len(ln) > 100]
    assert any("write_scene" in ln and re.search(r"\d+ tokens", ln) for ln in lines), lines
    assert any("render" in ln and re.search(r"step \d+/20", ln) for ln in lines), lines
    assert result.image_status == "done"
    # The stack's dev server runs headless: no link to a UI that is not there.
    assert "UI: http" not in stderr and "/namespaces/" not in stderr, stderr


async def test_rich_progress_on_a_100_column_terminal(stack: Stack,
                                                      first_scene: tuple[SceneResult, str]) -> None:
    console = Console(record=True, width=100, force_terminal=True, file=io.StringIO())
    await stack.faults(SLOW_LLM, SLOW_COMFY)
    try:
        handle = await stack.client.start_workflow(
            "SceneWorkflow", SceneRequest(direction=SECOND, story_id=first_scene[0].story_id,
                                          parent_node_id=first_scene[0].node_id,
                                          model="llama3.2", template="scene"),
            id=f"scene-rich-{free_port()}", task_queue=SCENE_WORKFLOW_QUEUE,
            result_type=SceneResult)
        result = await follow(stack.client, handle, mode="rich", interval=0.2, console=console)
    finally:
        await stack.faults({}, {})
    shown = console.export_text(clear=False)
    assert result.image_status == "done"
    assert re.search(r"write_scene \(\w+\) · \d+ tokens", shown), shown[-2000:]
    assert re.search(r"render \(\w+\) · (queue position \d+ · )?step \d+/20", shown), shown[-2000:]
    # Live redraws one frame over the last: the record holds the frames back to back.
    frames = [f.strip() for f in re.split(r"(?=\s+\d+\.\ds · )", shown) if f.strip()]
    assert len(frames) > 5 and all(len(f) <= 100 and "\n" not in f for f in frames), frames


async def _summaries(client: Client, workflow_id: str) -> list[str]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            found.append(json.loads(event.user_metadata.summary.data))
    return found


async def test_the_ui_link_finds_the_story_and_reads_like_it(
        stack: Stack, first_scene: tuple[SceneResult, str]) -> None:
    first, _ = first_scene
    # A branch, named by its parent node only: it belongs to that node's story from the start.
    second = await stack.storyloom("scene", SECOND, "--parent", first.node_id, "--json")
    assert second.returncode == 0, second.stderr
    second_result = SceneResult.model_validate_json(second.stdout)
    retry = await stack.storyloom("retry-image", first.node_id, "--force", "--json")
    assert retry.returncode == 0, retry.stderr
    retry_result = SceneResult.model_validate_json(retry.stdout)

    query = story_query(first.story_id)  # what `storyloom ui STORY` links to
    wanted = {first.workflow_id, second_result.workflow_id, retry_result.workflow_id}

    async def listed() -> bool:
        found = {wf.id async for wf in stack.client.list_workflows(query)}
        return wanted <= found

    await wait_until(listed, timeout=15, interval=0.2, what=f"workflows of {query}")

    summaries = await _summaries(stack.client, second_result.workflow_id)
    assert any(s.startswith("write scene 2: The fox shows the keeper") for s in summaries)
    assert any(re.fullmatch(r"render scene 2 \(scene(_with_reference)?, seed \d+\)", s)
               for s in summaries), summaries
    assert not any("(new)" in s or "new story" in s for s in summaries), summaries
    assert f"load context: branch from node {first.node_id}" in summaries
    desc = await stack.client.get_workflow_handle(second_result.workflow_id).describe()
    assert (await desc.static_summary() or "").startswith("Scene: The fox shows")
    details = await desc.static_details() or ""
    assert "**model**: llama3.2" in details and "**template**: scene" in details
    assert f"**story**: {first.story_id}, branching from node `{first.node_id}`" in details
    assert "new" not in details.split("**story**")[1]
    retry_desc = await stack.client.get_workflow_handle(retry_result.workflow_id).describe()
    attrs = {k.name: v for k, v in retry_desc.typed_search_attributes}
    assert attrs.get("StoryId") == first.story_id and attrs.get("NodeId") == first.node_id
    assert retry_result.timings.total_s > 0


async def test_story_scenes_are_numbered_once_in_the_ui(stack: Stack) -> None:
    run = await stack.storyloom("story", FIRST, "--scenes", "2", "--no-illustrate", "--json")
    assert run.returncode == 0, run.stderr
    nodes = json.loads(run.stdout)["nodes"]

    summaries = []
    for node in nodes:
        desc = await stack.client.get_workflow_handle(node["workflow_id"]).describe()
        summaries.append(await desc.static_summary() or "")
    assert summaries[0].startswith("scene 1: A lighthouse keeper"), summaries
    assert summaries[1].startswith("scene 2: continue the story of"), summaries
    assert not any(re.search(r"scene \d+: scene \d+", s, re.IGNORECASE) for s in summaries)


async def test_failure_is_one_paragraph_and_the_traceback_is_in_the_log(stack: Stack) -> None:
    # A model that answers only in `thinking` fails the scene for good (an unknown model is
    # refused before anything starts, exit 2: tests/unit/test_cli_input.py).
    await stack.faults({"answer_in_thinking": ["qwen3"], "think_always": ["qwen3"]}, {})
    try:
        run = await stack.storyloom("scene", FIRST, "--model", "qwen3")
    finally:
        await stack.faults({}, {})

    assert run.returncode == 1
    message = [ln for ln in run.stderr.splitlines()  # not the start line, not progress
               if ln.strip() and "started" not in ln and not re.match(r"^\s*\d+\.\ds · ", ln)]
    assert len(message) == 1, run.stderr
    assert "qwen3" in message[0] and "Traceback" not in run.stderr
    log = (stack.data_dir / "logs" / "cli.log").read_text()
    assert "Traceback" in log and "qwen3" in log


def _samples(page: str, name: str) -> dict[str, float]:
    out = {}
    for line in page.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_metrics_count_scenes_images_and_time_every_step(
        stack: Stack, first_scene: tuple[SceneResult, str]) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        reply = await http.get(stack.metrics_url)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    page = reply.text

    scenes = _samples(page, "storyloom_scenes_total")
    assert sum(v for k, v in scenes.items() if 'outcome="completed"' in k) >= 1, scenes
    images = _samples(page, "storyloom_images_total")
    assert images.get('storyloom_images_total{outcome="done"}', 0) >= 1, images
    steps = _samples(page, "storyloom_step_duration_seconds_count")
    for step in ("load_context", "write_scene", "save_node", "render", "attach_image"):
        assert steps.get(
            f'storyloom_step_duration_seconds_count{{outcome="ok",step="{step}"}}', 0) >= 1, steps
    assert re.search(r"^temporal_\w+", page, re.MULTILINE), "no Temporal SDK metric on the page"
