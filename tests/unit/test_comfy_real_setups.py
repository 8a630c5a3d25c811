"""Issue 11, image side: ComfyUI the way users run it (older servers, sockets that keep dropping,
slow nodes under a cancel, re-attached renders), over real sockets against the emulator."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import ApplicationError

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState
from activities.errors import ComfyValidationError
from activities.templates import WorkflowManager
from tests.fixtures.common import wait_until
from tests.unit.test_render_activity import Beats, assert_image, request
from tests.unit.test_render_recovery import with_last_beat

FAST = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.05, ws_silence=0.5)


class CountingTransport(httpx.AsyncHTTPTransport):
    """Counts the HTTP requests a client sends, by path."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await super().handle_async_request(request)


@pytest.fixture
async def comfy(comfy_emulator: Any) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_emulator.url, timeouts=FAST) as client:
        yield client


def activities_of(client: ComfyClient, tmp_path: Path) -> ImageActivities:
    return ImageActivities(client, WorkflowManager(), tmp_path / "media", heartbeat_every=0.1)


# ---- older servers ---------------------------------------------------------------------------


async def test_an_older_servers_plain_text_400_is_one_final_validation_error(
    comfy: ComfyClient, comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"legacy": True})
    inp = request(checkpoint="not-on-this-server.safetensors")
    with pytest.raises(ApplicationError) as caught:
        await Beats().run(activities_of(comfy, tmp_path), inp)
    assert caught.value.type == "ComfyValidationError" and caught.value.non_retryable
    message = str(caught.value)
    assert "Prompt outputs failed validation" in message  # ComfyUI's own words
    assert "ckpt_name" in message and "not-on-this-server.safetensors" in message
    assert comfy_emulator.stats["prompts_posted"] == 1
    assert comfy_emulator.stats["executed"] == 0


@pytest.mark.parametrize("body", [
    {"error": "invalid prompt: Node 'FancySampler' not found", "node_errors": []},
    {"error": "invalid prompt: Node 'FancySampler' not found"},
])
async def test_a_bare_string_error_keeps_comfyuis_message(body: dict[str, Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=body)

    async with ComfyClient("http://comfy.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ComfyValidationError) as caught:
            await client.queue_prompt({"1": {"class_type": "FancySampler", "inputs": {}}},
                                      str(uuid.uuid4()))
    assert "Node 'FancySampler' not found" in str(caught.value)
    assert caught.value.retryable is False


async def test_an_older_servers_history_without_status_is_a_finished_render(
    comfy: ComfyClient, comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"legacy": True})
    images = activities_of(comfy, tmp_path)
    inp = request()
    result = await Beats().run(images, inp)
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {result.prompt_id: 1}
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as http:
        entry = (await http.get(f"/history/{result.prompt_id}")).json()[result.prompt_id]
        assert "status" not in entry and "meta" not in entry  # what the client had to accept
        assert (await http.get(f"/api/jobs/{result.prompt_id}")).status_code == 404


@pytest.mark.parametrize("entry", [
    {"outputs": {"9": {"images": [{"filename": "a.png", "subfolder": "", "type": "output"}]}}},
    {"outputs": {"9": {"images": [{"filename": "a.png"}]}}, "status": {"completed": True}},
    {"outputs": {"9": {"images": [{"filename": "a.png"}]}},
     "status": {"status_str": "success", "completed": True}},
    {"outputs": {"9": {"images": [{"filename": "a.png"}]}}, "status": {"messages": []}},
])
async def test_a_finished_history_entry_missing_fields_is_completed(entry: dict[str, Any]) -> None:
    pid = str(uuid.uuid4())

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/api/jobs"):
            return httpx.Response(404, text="404: Not Found")
        if request.url.path == f"/history/{pid}":
            return httpx.Response(200, json={pid: {"prompt": [0, pid, {}, {}, ["9"]], **entry}})
        return httpx.Response(200, json={"queue_running": [], "queue_pending": []})

    async with ComfyClient("http://comfy.test", transport=httpx.MockTransport(handler)) as client:
        status = await client.job_status(pid)
        assert status.state is JobState.COMPLETED
        assert (await client.outputs(pid, "9"))[0].filename == "a.png"


# ---- a WebSocket that keeps dropping ---------------------------------------------------------


async def test_a_socket_dropped_at_every_connect_backs_off_and_the_render_ends_over_http(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"ws_drop_on_connect": True, "step_delay": 15.0})  # ~3 s of steps
    timeouts = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.5, ws_silence=5.0)
    transport = CountingTransport()
    async with ComfyClient(comfy_emulator.url, timeouts=timeouts, transport=transport) as client:
        images = activities_of(client, tmp_path)
        inp = request()
        began = time.monotonic()
        result = await Beats().run(images, inp)
        elapsed = time.monotonic() - began
    assert_image(result, images, inp)
    stats = comfy_emulator.stats
    assert stats["prompts_posted"] == 1 and stats["executed_by_prompt"] == {result.prompt_id: 1}
    connects, polls = stats["ws_connects"], transport.paths.count(f"/api/jobs/{result.prompt_id}")
    # Back-off: at once, then 0.5 s doubling, so the connects grow with the log of the time
    # (e76591a: 941 connects in 3.2 s, about 290 per second).
    assert 2 <= connects <= 4 + math.log2(1 + elapsed / timeouts.ws_retry_initial), (
        connects, elapsed)
    # While the socket is unusable, HTTP is read at the poll interval, not in a loop.
    assert polls <= 3 + 2 * elapsed / timeouts.poll_interval, (polls, elapsed)


# ---- re-attach -------------------------------------------------------------------------------


async def test_a_reattached_render_shows_sampler_progress_and_sees_the_end_at_once(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"step_delay": 10.0})  # 0.1 s per step, 20 steps
    # HTTP is read only once a minute: seeing the end in time needs the terminal frame, i.e. a
    # socket that receives this prompt's frames.
    slow_poll = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=60.0, ws_silence=60.0)
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    async with ComfyClient(comfy_emulator.url, timeouts=slow_poll) as worker_a, \
            ComfyClient(comfy_emulator.url, timeouts=slow_poll) as worker_b:
        first = Beats()
        task = asyncio.create_task(first.run(activities_of(worker_a, tmp_path), inp))
        await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 2, what="sampling")
        first.env.cancel(ActivityCancellationDetails(worker_shutdown=True))  # worker A leaves
        with pytest.raises(ApplicationError):
            await task
        second = with_last_beat(Beats(attempt=2), "running", pid)
        images_b = activities_of(worker_b, tmp_path)
        result = await second.run(images_b, inp)  # Beats.run gives up after 20 s
    assert_image(result, images_b, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}
    steps = [b.step for b in second.seen if b.steps == 20 and b.step > 0]
    assert steps and max(steps) == 20, [b.model_dump() for b in second.seen]


# ---- cancels that land -----------------------------------------------------------------------


async def test_a_cancel_during_a_slow_node_heartbeats_until_comfyui_confirms_it(
    comfy: ComfyClient, comfy_emulator: Any, tmp_path: Path
) -> None:
    # VAEDecode takes 3 s with no interrupt check inside: the interrupt lands when it ends.
    comfy_emulator.set_faults({"slow_node_class": "VAEDecode", "slow_node_seconds": 300.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    beats = Beats()
    task = asyncio.create_task(beats.run(activities_of(comfy, tmp_path), inp))
    await wait_until(lambda: comfy_emulator.core.current_node == "8", what="the VAE decode")
    beats.env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await comfy.job_status(pid)).state is JobState.CANCELLED
    assert comfy_emulator.stats["interrupted"] == 1 and comfy_emulator.stats["completed"] == 0
    cancelling = [b for b in beats.seen if b.state == "cancelling"]
    assert len(cancelling) >= 3  # heartbeats kept coming while the interrupt was pending
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as http:
        job = (await http.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "cancelled" and json.dumps(job).count("execution_interrupted") >= 1
