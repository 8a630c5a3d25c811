"""The ComfyUI client: wire format and error typing (MockTransport), and real sockets (emulator)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, FileRef, JobState
from activities.errors import (
    BadRequest,
    ComfyValidationError,
    ContentError,
    OutputMissing,
    ServerError,
    ServiceTimeout,
    ServiceUnavailable,
    to_application_error,
)
from tests.fixtures.common import free_port

PNG = b"\x89PNG\r\n\x1a\n" + b"fake image bytes" * 10

Handler = Callable[[httpx.Request], httpx.Response]


def mock_client(handler: Handler, **kw: Any) -> ComfyClient:
    return ComfyClient("http://comfy.test", client_id="worker-1",
                       transport=httpx.MockTransport(handler), **kw)


# ---- wire format and error typing ------------------------------------------------------------


async def test_queue_prompt_sends_graph_client_id_and_prompt_id() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"prompt_id": seen[-1]["prompt_id"], "number": 7,
                                         "node_errors": {}})

    pid = str(uuid.uuid4())
    graph = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    async with mock_client(handler) as client:
        assert await client.queue_prompt(graph, pid) == 7
    assert seen == [{"prompt": graph, "client_id": "worker-1", "prompt_id": pid}]


async def test_validation_error_names_node_class_and_input_and_is_final() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation",
                  "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
        "node_errors": {"1": {"errors": [{
            "type": "value_bigger_than_max", "message": "Value 99999 bigger than max of 16384",
            "details": "width", "extra_info": {"input_name": "width", "received_value": 99999}}],
            "dependent_outputs": ["2"], "class_type": "EmptyImage"}},
    }
    async with mock_client(lambda r: httpx.Response(400, json=body)) as client:
        with pytest.raises(ComfyValidationError) as caught:
            await client.queue_prompt({}, str(uuid.uuid4()))
    err = caught.value
    assert err.problems == [{"node_id": "1", "class_type": "EmptyImage", "input": "width",
                             "message": "Value 99999 bigger than max of 16384 (width)"}]
    assert "node 1 (EmptyImage) input width" in str(err)
    assert to_application_error(err).non_retryable


async def test_empty_body_200s_are_not_parsed_and_500_text_is_a_retryable_server_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/free":
            return httpx.Response(200)  # empty body, no content-type: like ComfyUI
        return httpx.Response(500, text="500 Internal Server Error\n\nServer got itself in trouble",
                              headers={"content-type": "text/plain; charset=utf-8"})

    async with mock_client(handler) as client:
        await client.free()
        with pytest.raises(ServerError) as caught:
            await client.system_stats()
    assert caught.value.retryable and caught.value.status == 500
    assert not to_application_error(caught.value).non_retryable


async def test_refused_connection_and_timeout_are_typed_and_retryable() -> None:
    async with ComfyClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ServiceUnavailable) as refused:
            await client.system_stats()
    assert refused.value.retryable and "127.0.0.1" in refused.value.where

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with mock_client(slow) as client:
        with pytest.raises(ServiceTimeout) as timed_out:
            await client.job_status(str(uuid.uuid4()))
    assert timed_out.value.retryable


async def test_job_status_falls_back_to_history_and_queue_without_jobs_api() -> None:
    done, failed, queued, running, stopped = (str(uuid.uuid4()) for _ in range(5))
    error = {"node_id": "1", "node_type": "LoadImage", "exception_type": "PIL.UnidentifiedImageError",
             "exception_message": "cannot identify image file"}
    history = {
        done: {"outputs": {"2": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}},
               "status": {"status_str": "success", "completed": True, "messages": []}},
        failed: {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                           "messages": [["execution_error", error]]}},
        stopped: {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                            "messages": [["execution_interrupted", {}]]}},
    }
    queue = {"queue_running": [[3, running, {}, {}, ["2"]]],
             "queue_pending": [[9, "other", {}, {}, ["2"]], [5, queued, {}, {}, ["2"]]]}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.startswith("/api/jobs"):
            return httpx.Response(404, text="404: Not Found")  # an older server: no jobs API
        if path.startswith("/history/"):
            pid = path.rsplit("/", 1)[1]
            return httpx.Response(200, json={pid: history[pid]} if pid in history else {})
        if path == "/queue":
            return httpx.Response(200, json=queue)
        return httpx.Response(500)

    async with mock_client(handler) as client:
        assert (await client.job_status(done)).state is JobState.COMPLETED
        assert await client.outputs(done, "2") == [FileRef("a.png", "", "output")]
        status = await client.job_status(failed)
        assert status.state is JobState.FAILED and status.error == error
        assert (await client.job_status(stopped)).state is JobState.CANCELLED
        assert (await client.job_status(running)).state is JobState.RUNNING
        pending = await client.job_status(queued)
        assert pending.state is JobState.PENDING and pending.queue_position == 1
        assert (await client.job_status(str(uuid.uuid4()))).state is JobState.UNKNOWN
        with pytest.raises(OutputMissing):
            await client.outputs(done, "9")


async def test_download_keeps_hostile_names_inside_dest_dir(tmp_path: Path) -> None:
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        return httpx.Response(200, content=PNG, headers={"content-type": "image/png"})

    dest = tmp_path / "media" / "wf"
    ref = FileRef("../../../escape.png", "../../..", "output")
    async with mock_client(handler) as client:
        got = await client.download(ref, dest, stem="../../n1/../render")
    digest = hashlib.sha256(PNG).hexdigest()
    assert asked == [{"filename": "../../../escape.png", "subfolder": "../../..", "type": "output"}]
    assert got.path.parent == dest and got.path.name == f"n1_.._render-{digest[:12]}.png"
    assert got.path.read_bytes() == PNG and got.sha256 == digest and got.size == len(PNG)
    assert sorted(p.name for p in dest.iterdir()) == [got.path.name]  # no temp file left
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [got.path]


async def test_download_refuses_types_outside_the_allow_list(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<svg/>", headers={"content-type": "image/svg+xml"})

    async with mock_client(handler) as client:
        with pytest.raises(ContentError):
            await client.download(FileRef("x.svg", "", "output"), tmp_path, stem="x")
    assert list(tmp_path.iterdir()) == []


async def test_upload_of_a_missing_file_is_a_final_error(tmp_path: Path) -> None:
    async with mock_client(lambda r: httpx.Response(500)) as client:
        with pytest.raises(BadRequest) as caught:
            await client.upload_image(tmp_path / "nope.png")
    assert not caught.value.retryable and "nope.png" in caught.value.where


async def test_cancel_without_jobs_api_deletes_interrupts_and_confirms() -> None:
    pid = str(uuid.uuid4())
    calls: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.content))
        if request.url.path.startswith("/api/"):
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(200)  # empty body
        if request.url.path.startswith("/history/"):
            return httpx.Response(200, json={pid: {"outputs": {}, "status": {
                "status_str": "error", "messages": [["execution_interrupted", {}]]}}})
        return httpx.Response(404)

    async with mock_client(handler) as client:
        assert await client.cancel(pid) is True
    posts = [(path, json.loads(body)) for method, path, body in calls
             if method == "POST" and not path.startswith("/api/")]
    assert posts == [("/queue", {"delete": [pid]}), ("/interrupt", {"prompt_id": pid})]


# ---- against the emulator, over real sockets -------------------------------------------------

FAST = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.05, ws_silence=0.5)


@pytest.fixture
async def comfy(comfy_emulator: Any) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_emulator.url, timeouts=FAST) as client:
        yield client


async def _follow(client: ComfyClient, graph: dict[str, Any], pid: str,
                  timeout: float = 10.0) -> list[Any]:
    async with client.watch() as watcher:
        await client.queue_prompt(graph, pid)

        async def run() -> list[Any]:
            return [event async for event in watcher.follow(pid)]

        return await asyncio.wait_for(run(), timeout)


async def _wait_state(client: ComfyClient, pid: str, state: JobState, timeout: float = 5.0) -> None:
    from tests.fixtures.common import wait_until

    async def reached() -> bool:
        return (await client.job_status(pid)).state is state

    await wait_until(reached, timeout=timeout, interval=0.02, what=f"{pid} {state}")


async def test_queue_follow_and_download_an_image(
    comfy: ComfyClient, comfy_emulator: Any, tmp_path: Path
) -> None:
    from tests.fixtures.comfy_emulator import txt2img_graph

    pid = str(uuid.uuid4())
    events = await _follow(comfy, txt2img_graph(steps=4, prefix="storyloom/t1"), pid)
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert "node" in kinds and any(e.kind == "step" and e.max == 4 for e in events)
    [ref] = await comfy.outputs(pid, "9")
    got = await comfy.download(ref, tmp_path / "media", stem="scene-1")
    served = comfy_emulator.root_dir / "output" / ref.subfolder / ref.filename
    assert got.path.read_bytes() == served.read_bytes()
    assert got.sha256 == hashlib.sha256(served.read_bytes()).hexdigest()
    assert got.path.name == f"scene-1-{got.sha256[:12]}.png" and got.path.parent == tmp_path / "media"


async def test_emulator_validation_error_lists_node_class_input(comfy: ComfyClient) -> None:
    from tests.fixtures.comfy_emulator import simple_graph

    with pytest.raises(ComfyValidationError) as caught:
        await comfy.queue_prompt(simple_graph(width=99999), str(uuid.uuid4()))
    [problem] = caught.value.problems
    assert (problem["node_id"], problem["class_type"], problem["input"]) == ("1", "EmptyImage", "width")
    assert "bigger than max" in problem["message"]
    assert to_application_error(caught.value).non_retryable


async def test_job_status_in_each_state(comfy: ComfyClient, comfy_emulator: Any) -> None:
    from tests.fixtures.comfy_emulator import simple_graph, txt2img_graph

    assert (await comfy.job_status(str(uuid.uuid4()))).state is JobState.UNKNOWN
    comfy_emulator.set_faults({"step_delay": 20.0})  # 0.2 s per step at the fixture's time scale
    slow, queued = str(uuid.uuid4()), str(uuid.uuid4())
    await comfy.queue_prompt(txt2img_graph(steps=50, prefix="slow"), slow)
    await comfy.queue_prompt(simple_graph("queued"), queued)
    await _wait_state(comfy, slow, JobState.RUNNING)
    pending = await comfy.job_status(queued)
    assert pending.state is JobState.PENDING and pending.queue_position == 1
    assert await comfy.cancel(slow) is True
    assert (await comfy.job_status(slow)).state is JobState.CANCELLED
    await _wait_state(comfy, queued, JobState.COMPLETED)
    assert "2" in (await comfy.job_status(queued)).outputs
    comfy_emulator.set_faults({"error_at_node": "EmptyImage"})
    broken = str(uuid.uuid4())
    await comfy.queue_prompt(simple_graph("broken", color=5), broken)
    await _wait_state(comfy, broken, JobState.FAILED)
    error = (await comfy.job_status(broken)).error
    assert error is not None and error["node_id"] == "1" and error["node_type"] == "EmptyImage"


async def test_follow_survives_dropped_sockets(comfy: ComfyClient, comfy_emulator: Any) -> None:
    from tests.fixtures.comfy_emulator import txt2img_graph

    comfy_emulator.set_faults({"ws_drop_after_steps": 2, "step_delay": 2.0})
    pid = str(uuid.uuid4())
    events = await _follow(comfy, txt2img_graph(steps=8, prefix="drop"), pid)
    kinds = [e.kind for e in events]
    assert "reconnected" in kinds and kinds[-1] == "done"
    assert comfy_emulator.stats["ws_drops"] >= 1
    assert comfy_emulator.stats["executed_by_prompt"][pid] == 1


async def test_follow_confirms_over_http_when_completion_frames_never_come(
    comfy: ComfyClient, comfy_emulator: Any
) -> None:
    from tests.fixtures.comfy_emulator import txt2img_graph

    comfy_emulator.set_faults({"suppress_ws_completion": True})
    pid = str(uuid.uuid4())
    events = await _follow(comfy, txt2img_graph(steps=3, prefix="quiet"), pid, timeout=5.0)
    assert events[-1].kind == "done"
    assert (await comfy.job_status(pid)).state is JobState.COMPLETED


async def test_follow_raises_a_typed_execution_error(comfy: ComfyClient, comfy_emulator: Any) -> None:
    from activities.errors import ComfyExecutionError
    from tests.fixtures.comfy_emulator import txt2img_graph

    comfy_emulator.set_faults({"error_at_node": "KSampler"})
    with pytest.raises(ComfyExecutionError) as caught:
        await _follow(comfy, txt2img_graph(prefix="fails"), str(uuid.uuid4()))
    err = caught.value
    assert (err.node_id, err.node_type, err.exception_type) == ("3", "KSampler", "RuntimeError")
    assert not err.retryable and "node 3" in err.where


async def test_cancel_interrupts_only_that_prompt(comfy: ComfyClient, comfy_emulator: Any) -> None:
    from tests.fixtures.comfy_emulator import txt2img_graph

    comfy_emulator.set_faults({"step_delay": 10.0})  # 0.1 s per step
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await comfy.queue_prompt(txt2img_graph(seed=1, steps=30, prefix="a"), first)
    await comfy.queue_prompt(txt2img_graph(seed=2, steps=30, prefix="b"), second)
    await _wait_state(comfy, first, JobState.RUNNING)
    assert await comfy.cancel(second) is True  # the pending one: dequeued, the running one goes on
    assert (await comfy.job_status(second)).state is JobState.UNKNOWN
    assert (await comfy.job_status(first)).state is JobState.RUNNING
    third = str(uuid.uuid4())
    await comfy.queue_prompt(txt2img_graph(seed=3, steps=3, prefix="c"), third)
    assert await comfy.cancel(first) is True  # the running one: interrupted; the next one runs
    assert (await comfy.job_status(first)).state is JobState.CANCELLED
    await _wait_state(comfy, third, JobState.COMPLETED)
    assert second not in comfy_emulator.stats["executed_by_prompt"]


async def test_upload_returns_the_servers_name(comfy: ComfyClient, tmp_path: Path) -> None:
    picture = tmp_path / "ref.png"
    picture.write_bytes(PNG)
    first = await comfy.upload_image(picture)
    assert first == FileRef("ref.png", "storyloom", "input")
    assert await comfy.upload_image(picture) == first  # identical bytes: the same file
    picture.write_bytes(PNG + b"changed")
    assert (await comfy.upload_image(picture)).filename == "ref (1).png"


async def test_object_info_and_system_stats(comfy: ComfyClient) -> None:
    info = await comfy.object_info("KSampler")
    assert "sampler_name" in info["input"]["required"]
    assert await comfy.object_info("NoSuchNode") == {}
    assert (await comfy.system_stats())["system"]["comfyui_version"] == "0.33.0"
