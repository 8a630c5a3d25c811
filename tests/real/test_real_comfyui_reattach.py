"""Re-attach over the WebSocket (issue 11), against our emulator and a real ComfyUI when
configured: ComfyUI sends a prompt's execution frames to the socket whose clientId the prompt
named (protocol §4.4), and a new socket with that clientId takes them over (§4.1), so a second
"worker" that re-attaches with the render's clientId sees the progress and the end; but an old
socket of that clientId closing afterwards unregisters the id and silences the new socket."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from activities.comfyui.activities import render_client_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState, ProgressEvent
from tests.fixtures.common import wait_until
from tests.real.conftest import ComfyTarget
from tests.real.test_real_comfyui import _busy, _color


def _hold(target: ComfyTarget) -> None:
    """On the emulator, 1 s per node (the busy graph takes seconds on a real CPU server)."""
    if target.emulator is not None:
        target.emulator.set_faults({"node_delay": 100})  # × time_scale 0.01


# HTTP is asked only once a minute: ending in time needs the socket's frames.
FRAMES_ONLY = ComfyTimeouts(poll_interval=60.0, ws_silence=60.0)


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


async def test_a_stale_socket_closing_late_unregisters_the_new_one(
    comfy_target: ComfyTarget, worker_b: ComfyClient
) -> None:
    """ComfyUI 0.33.0 registers a socket under its clientId on connect and pops the clientId
    when any socket of that id closes (server.py websocket_handler), so an old socket closing
    after a new one took its clientId over leaves the new one deaf: not one frame more, not even
    a status broadcast, while the prompt it named runs to the end (realcomfy findings 3a)."""
    pid = str(uuid.uuid4())
    cid = uuid.uuid4().hex
    url = _ws_url(comfy_target, cid)
    stale = await websockets.connect(url)
    await stale.recv()  # its status
    fresh = await websockets.connect(url)
    try:
        hello = json.loads(await fresh.recv())
        assert hello["type"] == "status" and hello["data"]["sid"] == cid
        await stale.close()  # after the fresh socket took the clientId over
        await worker_b.queue_prompt(_quick(), pid, client_id=cid)

        async def finished() -> bool:
            return (await worker_b.job_status(pid)).state is JobState.COMPLETED

        await wait_until(finished, timeout=60, interval=0.1, what="the prompt to complete")
        heard = await _drain(fresh, quiet=1.0)
    finally:
        await stale.close()
        await fresh.close()
    assert heard == [], heard  # neither our prompt's frames nor the status broadcasts


async def test_a_watcher_silenced_by_a_stale_socket_reopens_it_and_follows_to_the_end(
    comfy_target: ComfyTarget, worker_a: ComfyClient
) -> None:
    """The client's answer to the trap above: a socket that hears nothing while HTTP says the
    job runs is closed and opened again (which registers the clientId again), so the later
    nodes' frames arrive; the reconnects stay one per silence at most."""
    _hold(comfy_target)
    timeouts = ComfyTimeouts(poll_interval=0.5, ws_silence=2.5)
    pid = str(uuid.uuid4())
    cid = render_client_id(f"realtest-{pid}", "render")
    stale = await websockets.connect(_ws_url(comfy_target, cid))  # a dead attempt's socket
    await stale.recv()
    events: list[ProgressEvent] = []
    began = time.monotonic()
    try:
        async with ComfyClient(comfy_target.url, timeouts=timeouts) as client, \
                client.watch(cid) as watcher:
            await stale.close()  # ... closes after the new attempt took the clientId over
            await client.queue_prompt(_busy(comfy_target), pid, client_id=cid)
            events = [e async for e in _bounded(watcher.follow(pid), 120)]
            connects = watcher.connects
    finally:
        await stale.close()
        if comfy_target.emulator is not None:
            comfy_target.emulator.set_faults({})
    elapsed = time.monotonic() - began
    kinds = [e.kind for e in events]
    assert kinds[-1] == "done", kinds
    assert "reconnected" in kinds and "node" in kinds[kinds.index("reconnected"):], kinds
    assert 2 <= connects <= 2 + elapsed / timeouts.ws_silence, (connects, elapsed)


def _ws_url(target: ComfyTarget, client_id: str) -> str:
    return target.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"


def _quick() -> dict[str, Any]:
    """A tiny model-free graph with a fresh colour (a real server cannot answer from cache)."""
    return {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": _color()}},
        "2": {"class_type": "SaveImage",
              "inputs": {"images": ["1", 0], "filename_prefix": "storyloom/realquick"}},
    }


async def _drain(ws: ClientConnection, *, quiet: float) -> list[str]:
    """The text frames ``ws`` receives until it stays quiet for ``quiet`` seconds."""
    frames: list[str] = []
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), quiet)
        except TimeoutError:
            return frames
        if isinstance(frame, str):
            frames.append(frame)


async def _bounded(events: AsyncIterator[ProgressEvent], seconds: float) -> AsyncIterator[
        ProgressEvent]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            yield await asyncio.wait_for(anext(events), max(remaining, 0.001))
        except StopAsyncIteration:
            return
