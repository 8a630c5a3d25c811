"""ComfyClient against a ComfyUI server: our emulator always, a real one when configured.

Only what holds for any ComfyUI 0.33.0 is asserted: states, shapes, status codes, error classes
and whether they are retryable, file hashes. No exact texts, names or timings. See conftest.py
for how to point these at a real server (STORYLOOM_REAL_COMFYUI_URL).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, FileRef, JobState
from activities.errors import (
    BadRequest,
    ComfyExecutionError,
    ComfyValidationError,
    OutputMissing,
    to_application_error,
)
from activities.templates import WorkflowManager
from tests.fixtures.common import wait_until
from tests.real.conftest import ComfyTarget

TIMEOUTS = ComfyTimeouts(poll_interval=0.1, ws_silence=2.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _color() -> int:
    """A fresh colour per run, so a real server cannot answer from its cache."""
    return random.randrange(1, 16_777_215)


def _probe(prefix: str = "storyloom/realtest") -> dict[str, Any]:
    return WorkflowManager().render("probe", {"color": _color(), "filename_prefix": prefix})


def _busy(target: ComfyTarget) -> dict[str, Any]:
    """A model-free graph that keeps the queue busy for a few seconds on a real CPU server.

    On the emulator the same effect comes from the node_delay fault (see ``_hold``)."""
    size = 1024 if target.kind == "real" else 64
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": size, "height": size, "batch_size": 4, "color": _color()}},
        "2": {"class_type": "ImageBlur",
              "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 1.0}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "ImageBlur",
              "inputs": {"image": ["3", 0], "blur_radius": 31, "sigma": 1.0}},
        "5": {"class_type": "SaveImage",
              "inputs": {"images": ["4", 0], "filename_prefix": "storyloom/realbusy"}},
    }


def _hold(target: ComfyTarget) -> None:
    if target.emulator is not None:
        target.emulator.set_faults({"node_delay": 300})  # 3 s per node at time_scale 0.01


async def _finish(client: ComfyClient, pid: str, timeout: float = 60.0) -> JobState:
    async def done() -> bool:
        state = (await client.job_status(pid)).state
        return state not in (JobState.PENDING, JobState.RUNNING)

    await wait_until(done, timeout=timeout, interval=0.1, what=f"prompt {pid} to finish")
    return (await client.job_status(pid)).state


@pytest.fixture
async def comfy(comfy_target: ComfyTarget) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_target.url, timeouts=TIMEOUTS) as client:
        yield client


async def test_probe_template_checks_queues_follows_and_downloads_with_sha(
    comfy: ComfyClient, tmp_path: Path
) -> None:
    assert await WorkflowManager().check_against_server(comfy, "probe") == []
    pid = str(uuid.uuid4())
    assert (await comfy.job_status(pid)).state is JobState.UNKNOWN
    async with comfy.watch() as watcher:
        number = await comfy.queue_prompt(_probe(), pid, extra_data={"storyloom": {"t": 1}})
        assert isinstance(number, int)
        kinds = [event.kind async for event in watcher.follow(pid)]
    assert kinds[-1] == "done"
    assert "node" in kinds or "started" in kinds or kinds[0] == "done"
    status = await comfy.job_status(pid)
    assert status.state is JobState.COMPLETED
    refs = await comfy.outputs(pid, "2")
    assert len(refs) == 1 and refs[0].type == "output" and refs[0].filename.endswith(".png")
    got = await comfy.download(refs[0], tmp_path / "dl", stem="probe")
    data = got.path.read_bytes()
    assert data.startswith(PNG_MAGIC) and got.size == len(data)
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert got.path.parent == tmp_path / "dl" and got.path.name.startswith("probe-")
    again = await comfy.download(refs[0], tmp_path / "dl", stem="probe")
    assert again.path == got.path and again.sha256 == got.sha256


@pytest.mark.parametrize(("node", "inputs", "bad_input"), [
    ("1", {"width": 99999}, "width"),
    ("1", {"width": "abc"}, "width"),
    ("1", {"color": None}, "color"),
])
async def test_validation_errors_are_typed_with_node_class_input_and_final(
    comfy: ComfyClient, node: str, inputs: dict[str, Any], bad_input: str
) -> None:
    graph = _probe()
    for key, value in inputs.items():
        if value is None:
            del graph[node]["inputs"][key]
        else:
            graph[node]["inputs"][key] = value
    pid = str(uuid.uuid4())
    with pytest.raises(ComfyValidationError) as caught:
        await comfy.queue_prompt(graph, pid)
    err = caught.value
    assert err.status == 400 and not err.retryable
    assert to_application_error(err).non_retryable
    assert [(p["node_id"], p["class_type"], p["input"]) for p in err.problems] == [
        (node, "EmptyImage", bad_input)]
    assert (await comfy.job_status(pid)).state is JobState.UNKNOWN


async def test_whole_prompt_errors_are_final(comfy: ComfyClient) -> None:
    unknown_class = {"1": {"class_type": "NoSuchNodeStoryloom", "inputs": {}}}
    no_outputs = {"1": _probe()["1"]}
    for graph in (unknown_class, no_outputs):
        with pytest.raises(ComfyValidationError) as caught:
            await comfy.queue_prompt(graph, str(uuid.uuid4()))
        assert not caught.value.retryable and caught.value.problems
    with pytest.raises(ComfyValidationError) as caught:
        await comfy.queue_prompt(_probe(), str(uuid.uuid4()).upper())
    assert not caught.value.retryable


async def test_duplicate_prompt_id_is_accepted_twice_and_ends_as_one_job(
    comfy: ComfyClient,
) -> None:
    graph, pid = _probe(), str(uuid.uuid4())
    first = await comfy.queue_prompt(graph, pid)
    second = await comfy.queue_prompt(graph, pid)
    assert second > first  # the server does not de-duplicate (§2.4)
    assert await _finish(comfy, pid) is JobState.COMPLETED
    history = (await comfy.http.client.get(f"/history/{pid}")).json()
    assert list(history) == [pid]
    assert history[pid]["status"]["status_str"] == "success"
    jobs = (await comfy.http.client.get("/api/jobs", params={"limit": 500})).json()["jobs"]
    assert [job["id"] for job in jobs].count(pid) >= 1


async def test_cancel_pending_then_running_and_job_states(
    comfy_target: ComfyTarget, comfy: ComfyClient
) -> None:
    _hold(comfy_target)
    running, pending = str(uuid.uuid4()), str(uuid.uuid4())
    await comfy.queue_prompt(_busy(comfy_target), running)
    await comfy.queue_prompt(_busy(comfy_target), pending)
    try:
        async def started() -> bool:
            return (await comfy.job_status(running)).state is JobState.RUNNING

        await wait_until(started, timeout=30, what="the first prompt to run")
        waiting = await comfy.job_status(pending)
        assert waiting.state is JobState.PENDING and waiting.queue_position == 1
        assert await comfy.cancel(pending, confirm_within=10) is True
        assert (await comfy.job_status(pending)).state is JobState.UNKNOWN  # dequeued: gone
        assert (await comfy.job_status(running)).state is JobState.RUNNING  # untouched
        assert await comfy.cancel(running, confirm_within=30) is True
        assert (await comfy.job_status(running)).state is JobState.CANCELLED
        assert await comfy.cancel(running) is True  # idempotent
    finally:
        if comfy_target.emulator is not None:
            comfy_target.emulator.set_faults({})
        await comfy.http.client.post("/queue", json={"delete": [pending]})
        await comfy.http.client.post("/interrupt", json={"prompt_id": running})


async def test_runtime_failure_is_failed_and_follow_raises_final_execution_error(
    comfy: ComfyClient, tmp_path: Path
) -> None:
    bogus = tmp_path / f"not-an-image-{uuid.uuid4().hex[:8]}.png"
    bogus.write_bytes(b"this is not a png at all")
    ref = await comfy.upload_image(bogus, subfolder="storyloom/realtest")
    graph = {
        "1": {"class_type": "LoadImage",
              "inputs": {"image": f"{ref.subfolder}/{ref.filename}"}},
        "2": {"class_type": "SaveImage",
              "inputs": {"images": ["1", 0], "filename_prefix": "storyloom/realfail"}},
    }
    pid = str(uuid.uuid4())
    async with comfy.watch() as watcher:
        await comfy.queue_prompt(graph, pid)
        with pytest.raises(ComfyExecutionError) as caught:
            async for _ in watcher.follow(pid):
                pass
    err = caught.value
    assert err.node_id == "1" and err.node_type == "LoadImage" and not err.retryable
    status = await comfy.job_status(pid)
    assert status.state is JobState.FAILED and status.error is not None
    assert status.error["node_type"] == "LoadImage" and status.error["exception_type"]
    with pytest.raises(OutputMissing):
        await comfy.outputs(pid, "2")


@pytest.mark.parametrize(("ref", "status"), [
    (FileRef("../../etc/passwd", "", "output"), 400),
    (FileRef("passwd", "../../../../etc", "output"), 403),
    (FileRef("x.png", "", "nonsense"), 400),
])
async def test_view_refuses_escapes_as_final_bad_requests(
    comfy: ComfyClient, tmp_path: Path, ref: FileRef, status: int
) -> None:
    with pytest.raises(BadRequest) as caught:
        await comfy.download(ref, tmp_path / "dl", stem="x")
    assert caught.value.status == status and not caught.value.retryable
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file left


async def test_view_of_a_missing_file_is_output_missing(
    comfy: ComfyClient, tmp_path: Path
) -> None:
    with pytest.raises(OutputMissing) as caught:
        await comfy.download(FileRef(f"nope-{uuid.uuid4().hex}.png", "", "output"), tmp_path,
                             stem="x")
    assert caught.value.status == 404 and not caught.value.retryable


async def test_upload_dedupes_identical_bytes_and_renames_on_clash(
    comfy: ComfyClient, tmp_path: Path
) -> None:
    name = f"ref-{uuid.uuid4().hex[:8]}.png"
    first, second = tmp_path / "a" / name, tmp_path / "b" / name
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(PNG_MAGIC + b"one")
    second.write_bytes(PNG_MAGIC + b"two")
    a = await comfy.upload_image(first, subfolder="storyloom/realtest")
    assert (a.filename, a.subfolder, a.type) == (name, "storyloom/realtest", "input")
    assert await comfy.upload_image(first, subfolder="storyloom/realtest") == a
    b = await comfy.upload_image(second, subfolder="storyloom/realtest")
    assert b.filename != name and b.filename.endswith(".png") and b.subfolder == a.subfolder
    assert b.filename.startswith(name[:-4])
    c = await comfy.upload_image(second, subfolder="storyloom/realtest", overwrite=True)
    assert c.filename == name
    top = await comfy.upload_image(first, subfolder="")
    assert (top.filename, top.subfolder) == (name, "")
    choices = (await comfy.object_info("LoadImage"))["input"]["required"]["image"][0]
    assert name in choices  # LoadImage lists the top of the input folder only
    assert not any(choice.startswith("storyloom/") for choice in choices)


async def test_object_info_and_system_stats_shapes(comfy: ComfyClient) -> None:
    info = await comfy.object_info("EmptyImage")
    assert info["output"] == ["IMAGE"] and info["output_node"] is False
    assert set(info["input"]["required"]) == {"width", "height", "batch_size", "color"}
    assert (await comfy.object_info("SaveImage"))["output_node"] is True
    assert await comfy.object_info("NoSuchNodeStoryloom") == {}
    stats = await comfy.system_stats()
    assert isinstance(stats["system"]["comfyui_version"], str) and stats["devices"]


async def test_txt2img_with_a_checkpoint(
    comfy_target: ComfyTarget, comfy: ComfyClient, tmp_path: Path
) -> None:
    if comfy_target.checkpoint is None:
        pytest.skip("set STORYLOOM_REAL_COMFYUI_CHECKPOINT to run graphs that need a model")
    graph = WorkflowManager().render("scene", _scene_params(comfy_target.checkpoint))
    pid = str(uuid.uuid4())
    async with comfy.watch() as watcher:
        await comfy.queue_prompt(graph, pid)
        events = [event async for event in watcher.follow(pid)]
    assert events[-1].kind == "done"
    output = WorkflowManager().manifest("scene").output_node
    refs = await comfy.outputs(pid, output)
    got = await comfy.download(refs[0], tmp_path, stem="scene")
    assert got.path.read_bytes().startswith(PNG_MAGIC)


def _scene_params(checkpoint: str) -> dict[str, Any]:
    return {"checkpoint": checkpoint, "positive": "a lighthouse at dusk", "steps": 2,
            "width": 256, "height": 256, "seed": random.randrange(1 << 32)}
