"""Two edges of ComfyUI 0.33.0 that storyloom's render must live with, observed on a real server
(emulator always, real ComfyUI when STORYLOOM_REAL_COMFYUI_URL is set; see conftest.py):

- An interrupt is only noticed before a node starts or at a progress step. A cancel that arrives
  while the last node (SaveImage) runs is answered ``{"cancelled": true}``, yet the job then
  ends ``completed`` with its images: ``ComfyClient.cancel`` must report False, not True.
- A socket's close unregisters its clientId on the server even when a newer socket with the same
  clientId took over (server.py pops the id in the old handler's ``finally``). A render that
  re-attached while an older attempt's socket was still open goes deaf when that one closes;
  only the HTTP fallback ends its follow.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from activities.comfyui.activities import render_client_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState, ProgressEvent
from tests.fixtures.common import wait_until
from tests.real.conftest import ComfyTarget
from tests.real.test_real_comfyui import _busy, _hold

TIMEOUTS = ComfyTimeouts(poll_interval=0.1, ws_silence=2.0)


def _slow_save(target: ComfyTarget) -> tuple[dict[str, Any], str]:
    """A graph whose last node (SaveImage) runs for seconds, and that node's id.

    Real server: noise makes the PNGs slow to compress. Emulator: the slow_node_class fault."""
    color = random.randrange(1, 16_777_215)
    if target.emulator is not None:
        target.emulator.set_faults({"slow_node_class": "SaveImage", "slow_node_seconds": 300})
        return {
            "1": {"class_type": "EmptyImage",
                  "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage",
                  "inputs": {"images": ["1", 0], "filename_prefix": "storyloom/realsave"}},
        }, "2"
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 1024, "height": 1024, "batch_size": 6, "color": color}},
        "2": {"class_type": "ImageAddNoise",
              "inputs": {"image": ["1", 0], "seed": random.randrange(1 << 32), "strength": 0.5}},
        "3": {"class_type": "SaveImage",
              "inputs": {"images": ["2", 0], "filename_prefix": "storyloom/realsave"}},
    }, "3"


@pytest.fixture
async def comfy(comfy_target: ComfyTarget) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_target.url, timeouts=TIMEOUTS) as client:
        yield client
    if comfy_target.emulator is not None:
        comfy_target.emulator.set_faults({})


async def test_a_cancel_during_the_last_node_is_too_late_and_the_job_completes(
    comfy_target: ComfyTarget, comfy: ComfyClient
) -> None:
    graph, save = _slow_save(comfy_target)
    pid = str(uuid.uuid4())
    answer: bool | None = None
    kinds: list[str] = []
    async with comfy.watch() as watcher:
        await comfy.queue_prompt(graph, pid)
        async for event in watcher.follow(pid):
            kinds.append(event.kind)
            if answer is None and event.kind == "node" and event.node == save:
                answer = await comfy.cancel(pid, confirm_within=60)
    assert answer is False, kinds  # the server said {"cancelled": true}, but nothing stopped
    assert kinds[-1] == "done"
    assert (await comfy.job_status(pid)).state is JobState.COMPLETED
    assert len(await comfy.outputs(pid, save)) == graph["1"]["inputs"]["batch_size"]


async def test_an_old_socket_closing_after_a_re_attach_does_not_hang_the_render(
    comfy_target: ComfyTarget,
) -> None:
    _hold(comfy_target)
    pid = str(uuid.uuid4())
    cid = render_client_id(f"realtest-{pid}", "render")
    events: list[ProgressEvent] = []
    attached = asyncio.Event()

    async def attempt_two(client: ComfyClient) -> None:
        async with client.watch(cid) as watcher:  # connects while attempt 1's socket is open
            async for event in watcher.follow(pid):
                events.append(event)
                attached.set()

    async with ComfyClient(comfy_target.url, timeouts=TIMEOUTS) as one, \
            ComfyClient(comfy_target.url, timeouts=TIMEOUTS) as two:
        try:
            async with one.watch(cid):  # attempt 1: submits, and its socket outlives the retry
                await one.queue_prompt(_busy(comfy_target), pid, client_id=cid)

                async def running() -> bool:
                    return (await one.job_status(pid)).state is JobState.RUNNING

                await wait_until(running, timeout=60, what="the prompt to run")
                follower = asyncio.create_task(attempt_two(two))
                await asyncio.wait_for(attached.wait(), 30)
                # leaving the block closes attempt 1's socket: on a real server that also
                # unregisters attempt 2's socket, which hears nothing more from then on
            assert (await two.job_status(pid)).state is JobState.RUNNING
            await asyncio.wait_for(follower, 180)
            assert events[-1].kind == "done", [e.kind for e in events]
            assert (await two.job_status(pid)).state is JobState.COMPLETED
        finally:
            if comfy_target.emulator is not None:
                comfy_target.emulator.set_faults({})
