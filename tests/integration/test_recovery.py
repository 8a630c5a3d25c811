"""Crash recovery end to end: a worker killed mid-render, a cancelled scene next to an unrelated
ComfyUI job, `retry-image` and recorded fallbacks, all through real processes and the CLI."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from activities.comfyui.activities import render_prompt_id
from tests.fixtures.comfy_emulator import txt2img_graph
from tests.fixtures.common import wait_until
from tests.fixtures.processes import Services, start_services
from workflows_temporal.contracts import SceneResult

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

DIRECTION = "A lighthouse keeper finds a talking fox"
SLOW_RENDER = {"step_delay": 10.0}  # x time_scale 0.02: 0.2 s per step, 20 steps, ~4 s
VERY_SLOW_RENDER = {"step_delay": 100.0}  # 2 s per step: the cancel surely arrives mid-render


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    root = tmp_path_factory.mktemp("recovery")
    running = await start_services(root, extra_env={"STORYLOOM_FALLBACK_MODELS": '["qwen3"]'})
    try:
        yield running
    finally:
        await running.close()


def node_row(db_file: Path, node_id: str) -> dict[str, Any]:
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM nodes WHERE id = ?", (node_id,)).fetchone()
    assert row is not None, f"node {node_id} is not in {db_file}"
    return dict(row)


def notes_of(row: dict[str, Any]) -> list[str]:
    return [n["text"] for n in json.loads(row["notes"] or "[]")]


async def job_status(services: Services, prompt_id: str) -> str | None:
    try:
        job = await services.emulator_get(services.comfy_url, f"/api/jobs/{prompt_id}")
    except Exception:  # noqa: BLE001 - 404 while not yet submitted
        return None
    return str(job.get("status"))


async def start_scene(services: Services, *args: str) -> str:
    run = await services.storyloom("scene", DIRECTION, "--detach", *args)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip().splitlines()[-1]


async def test_killed_worker_mid_render_finishes_without_a_second_gpu_job(
    services: Services,
) -> None:
    await services.emulator_post(services.comfy_url, SLOW_RENDER)
    try:
        workflow_id = await start_scene(services)
        prompt_id = render_prompt_id(workflow_id, "render")

        async def rendering() -> bool:
            return await job_status(services, prompt_id) == "in_progress"

        await wait_until(rendering, timeout=60, interval=0.1, what="the render to run")
        for name in list(services.workers()):
            services.kill(name)  # kill -9: no drain, no goodbye
        services.start_worker()
        run = await services.storyloom("watch", workflow_id, "--json", timeout=120)
    finally:
        await services.emulator_post(services.comfy_url, {})

    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    assert result.image_status == "done"
    stats = await services.emulator_get(services.comfy_url, "/_emulator/stats")
    assert stats["executed_by_prompt"][prompt_id] == 1
    row = node_row(services.db_file, result.node_id)
    assert row["image_prompt_id"] == prompt_id
    image = Path(row["image_path"])
    assert hashlib.sha256(image.read_bytes()).hexdigest() == row["image_sha256"]
    assert not list(services.media_dir.rglob(".part-*"))


async def test_cancel_interrupts_the_scene_prompt_and_spares_an_unrelated_one(
    services: Services,
) -> None:
    await services.emulator_post(services.comfy_url, VERY_SLOW_RENDER)
    other = str(uuid.uuid4())
    try:
        workflow_id = await start_scene(services)
        prompt_id = render_prompt_id(workflow_id, "render")

        async def rendering() -> bool:
            return await job_status(services, prompt_id) == "in_progress"

        await wait_until(rendering, timeout=60, interval=0.1, what="the render to run")
        async with httpx.AsyncClient(timeout=5.0) as http:
            reply = await http.post(services.comfy_url + "/prompt", json={
                "prompt": txt2img_graph(seed=99, steps=4, prefix="someone-else"),
                "prompt_id": other, "client_id": "another-user"})
            reply.raise_for_status()
        cancel = await services.storyloom("cancel", workflow_id)
        assert cancel.returncode == 0, cancel.stderr

        async def interrupted() -> bool:
            return await job_status(services, prompt_id) == "cancelled"

        async def other_done() -> bool:
            return await job_status(services, other) == "completed"

        await wait_until(interrupted, timeout=30, interval=0.1, what="the scene's prompt cancelled")
        await wait_until(other_done, timeout=30, interval=0.1, what="the unrelated prompt")
        watched = await services.storyloom("watch", workflow_id, timeout=60)
    finally:
        await services.emulator_post(services.comfy_url, {})

    assert watched.returncode == 1 and "cancelled" in watched.stderr, watched.stderr
    stats = await services.emulator_get(services.comfy_url, "/_emulator/stats")
    assert stats["executed_by_prompt"][other] == 1
    assert stats["executed_by_prompt"][prompt_id] == 1


def _sampler_seed(job: dict[str, Any]) -> int:
    graph = job["workflow"]["prompt"]
    return int(next(n["inputs"]["seed"] for n in graph.values() if n["class_type"] == "KSampler"))


async def test_retry_image_after_a_cancel_renders_with_the_same_seed(services: Services) -> None:
    await services.emulator_post(services.comfy_url, VERY_SLOW_RENDER)
    try:
        workflow_id = await start_scene(services)
        prompt_id = render_prompt_id(workflow_id, "render")

        async def rendering() -> bool:
            return await job_status(services, prompt_id) == "in_progress"

        await wait_until(rendering, timeout=60, interval=0.1, what="the render to run")
        assert (await services.storyloom("cancel", workflow_id)).returncode == 0
        watched = await services.storyloom("watch", workflow_id, timeout=60)
        assert watched.returncode == 1, watched.stderr
    finally:
        await services.emulator_post(services.comfy_url, {})
    first = await services.emulator_get(services.comfy_url, f"/api/jobs/{prompt_id}")
    with sqlite3.connect(services.db_file) as db:
        node_id = db.execute("SELECT id FROM nodes WHERE workflow_id = ?",
                             (workflow_id,)).fetchone()[0]
    assert int(node_row(services.db_file, node_id)["image_seed"]) == _sampler_seed(first)

    retry = await services.storyloom("retry-image", node_id, "--json", timeout=90)

    assert retry.returncode == 0, retry.stderr
    result = SceneResult.model_validate_json(retry.stdout)
    assert result.image_status == "done"
    again = await services.emulator_get(
        services.comfy_url, f"/api/jobs/{render_prompt_id(f'retry-image-{node_id}-1', 'render')}")
    assert _sampler_seed(again) == _sampler_seed(first) != 0  # the README's "same seed"
    assert int(node_row(services.db_file, node_id)["image_seed"]) == _sampler_seed(first)
    assert result.timings.illustrate_s > 0 and result.timings.total_s > 0


async def test_retry_image_renders_a_failed_illustration_again(services: Services) -> None:
    await services.emulator_post(services.comfy_url, {"error_at_node": "KSampler"})
    try:
        run = await services.storyloom("scene", DIRECTION, "--json", timeout=90)
    finally:
        await services.emulator_post(services.comfy_url, {})
    assert run.returncode == 0, run.stderr
    scene = SceneResult.model_validate_json(run.stdout)
    assert scene.image_status == "failed"
    before = node_row(services.db_file, scene.node_id)
    assert before["image_prompt"], "the image prompt is kept for a retry"

    retry = await services.storyloom("retry-image", scene.node_id, "--json", timeout=90)

    assert retry.returncode == 0, retry.stderr
    result = SceneResult.model_validate_json(retry.stdout)
    assert result.image_status == "done" and result.node_id == scene.node_id
    row = node_row(services.db_file, scene.node_id)
    assert row["image_status"] == "done" and row["image_seed"] == before["image_seed"]
    assert row["image_prompt"] == before["image_prompt"]
    assert hashlib.sha256(Path(row["image_path"]).read_bytes()).hexdigest() == row["image_sha256"]
    assert "retry-image 1: rendered again" in notes_of(row)
    assert row["image_prompt_id"] == render_prompt_id(f"retry-image-{scene.node_id}-1", "render")

    again = await services.storyloom("retry-image", scene.node_id)
    assert again.returncode == 2 and "--force" in again.stderr
    shown = await services.storyloom("show", scene.node_id)
    assert "note: retry-image 1: rendered again" in shown.stdout


async def test_a_fallback_model_is_recorded_on_the_node_and_shown(services: Services) -> None:
    await services.emulator_post(services.ollama_url, {"missing_models": ["llama3.2"]})
    try:
        run = await services.storyloom("scene", DIRECTION, "--no-illustrate", "--json",
                                       timeout=90)
    finally:
        await services.emulator_post(services.ollama_url, {})
    assert run.returncode == 0, run.stderr
    result = SceneResult.model_validate_json(run.stdout)
    notes = notes_of(node_row(services.db_file, result.node_id))
    assert any(n.startswith("written by qwen3") for n in notes), notes
    shown = await services.storyloom("show", result.node_id)
    assert "note: written by qwen3" in shown.stdout
