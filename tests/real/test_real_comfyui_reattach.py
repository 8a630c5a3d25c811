"""Re-attach over the WebSocket (issue 11), against our emulator and a real ComfyUI when
configured: ComfyUI sends a prompt's execution frames to the socket whose clientId the prompt
named (protocol §4.4), and a new socket with that clientId takes them over (§4.1), so a second
"worker" that re-attaches with the render's clientId sees the progress and the end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from activities.comfyui.activities import render_client_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState, ProgressEvent
from tests.fixtures.common import wait_until
from tests.real.conftest import ComfyTarget
from tests.real.test_real_comfyui import _busy


def _hold(target: ComfyTarget) -> None:
    """On the emulator, 1 s per node (the busy graph takes seconds on a real CPU server)."""
    if target.emulator is not None:
        target.emulator.set_faults({"node_delay": 100})  # × time_scale 0.01


# HTTP is asked only after a minute of silence: ending in time needs the socket's frames.
FRAMES_ONLY = ComfyTimeouts(poll_interval=0.1, ws_silence=60.0)


@pytest.fixture
async def worker_a(comfy_target: ComfyTarget) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_target.url, timeouts=FRAMES_ONLY) as client:
        yield client


@pytest.fixture
async def worker_b(comfy_target: ComfyTarget) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_target.url, timeouts=FRAMES_ONLY) as client:
        yield client


async def test_a_new_socket_with_the_renders_client_id_gets_its_frames(
    comfy_target: ComfyTarget, worker_a: ComfyClient, worker_b: ComfyClient
) -> None:
    assert worker_a.client_id != worker_b.client_id  # two workers
    _hold(comfy_target)
    pid = str(uuid.uuid4())
    cid = render_client_id(f"realtest-{pid}", "render")
    try:
        async with worker_a.watch(cid):  # attempt 1 opens its socket, submits, then dies
            await worker_a.queue_prompt(_busy(comfy_target), pid, client_id=cid)

            async def running() -> bool:
                return (await worker_a.job_status(pid)).state is JobState.RUNNING

            await wait_until(running, timeout=30, what="the prompt to run")
        events: list[ProgressEvent] = []

        async def follow() -> None:
            async with worker_b.watch(cid) as watcher:  # attempt 2, on another worker
                async for event in watcher.follow(pid):
                    events.append(event)

        await asyncio.wait_for(follow(), 45)  # well before the 60 s HTTP fallback
    finally:
        if comfy_target.emulator is not None:
            comfy_target.emulator.set_faults({})
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done"
    assert "node" in kinds, kinds  # executing frames for this prompt reached the new socket
    assert (await worker_b.job_status(pid)).state is JobState.COMPLETED


async def test_a_stale_socket_closing_late_does_not_silence_the_new_one(
    comfy_target: ComfyTarget, worker_a: ComfyClient, worker_b: ComfyClient
) -> None:
    """A stale attempt (timed out, its worker still alive) may close its socket after the new
    attempt connected with the same clientId. The new socket must still get the frames; if a
    real server unregisters the id on the old socket's close, this test shows it (the client
    then falls back to HTTP after ws_silence, and the emulator would need the same behaviour)."""
    _hold(comfy_target)
    pid = str(uuid.uuid4())
    cid = render_client_id(f"realtest-{pid}", "render")
    stale = worker_a.watch(cid)
    await stale.__aenter__()
    try:
        async with worker_b.watch(cid) as fresh:  # the new attempt takes the id over
            await stale.__aexit__(None, None, None)  # ... then the stale one closes
            await worker_b.queue_prompt(_busy(comfy_target), pid, client_id=cid)
            kinds = [e.kind async for e in _bounded(fresh.follow(pid), 45)]
    finally:
        await stale.__aexit__(None, None, None)
        if comfy_target.emulator is not None:
            comfy_target.emulator.set_faults({})
    assert kinds[-1] == "done" and "node" in kinds, kinds


async def _bounded(events: AsyncIterator[ProgressEvent], seconds: float) -> AsyncIterator[
        ProgressEvent]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            yield await asyncio.wait_for(anext(events), max(remaining, 0.001))
        except StopAsyncIteration:
            return
