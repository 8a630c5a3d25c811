"""A stale socket with the render's clientId closes after the new attempt connected: real
ComfyUI 0.33.0 then unregisters the clientId and the new socket hears nothing more (realcomfy
findings 3a). The render must still show progress (it reopens its silent socket) and still end
in time (HTTP on a timer), over real sockets against the emulator, which does the same."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import websockets

from activities.comfyui.activities import (
    ImageActivities,
    render_client_id,
    render_prompt_id,
)
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts
from activities.templates import WorkflowManager
from tests.fixtures.comfy_emulator import txt2img_graph
from tests.fixtures.common import wait_until
from tests.unit.test_render_activity import Beats, assert_image, request


def _ws_url(emulator: Any, client_id: str) -> str:
    return emulator.url.replace("http://", "ws://") + f"/ws?clientId={client_id}"


async def _render_beside_a_stale_socket(
    comfy_emulator: Any, tmp_path: Path, timeouts: ComfyTimeouts
) -> tuple[Beats, float]:
    """Open a socket with the render's clientId (an older attempt's), start the render, close
    the old socket once the render's own socket is open, and wait for the render's result."""
    inp = request()
    cid = render_client_id(inp.workflow_id, inp.step)
    beats = Beats()
    async with ComfyClient(comfy_emulator.url, timeouts=timeouts) as client:
        images = ImageActivities(client, WorkflowManager(), tmp_path / "media",
                                 heartbeat_every=0.1)
        stale = await websockets.connect(_ws_url(comfy_emulator, cid))
        began = time.monotonic()
        try:
            task = asyncio.create_task(beats.run(images, inp))
            await wait_until(lambda: comfy_emulator.stats["ws_connects"] >= 2,
                             what="the render's socket")
        finally:
            await stale.close()  # after the render's socket took the clientId over
        result = await task
        elapsed = time.monotonic() - began
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {
        render_prompt_id(inp.workflow_id, inp.step): 1}
    return beats, elapsed


async def test_a_render_silenced_by_a_stale_socket_reopens_it_and_shows_the_sampler_steps(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"step_delay": 20.0})  # 0.2 s per step, 20 steps: 4 s of sampling
    # HTTP is read only once a minute: the steps and the end must come over a socket that
    # ComfyUI knows again, i.e. one the render reopened after 0.5 s of silence.
    timeouts = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=60.0, ws_silence=0.5)
    beats, elapsed = await _render_beside_a_stale_socket(
        comfy_emulator, tmp_path, timeouts)
    steps = sorted({b.step for b in beats.seen if b.steps == 20 and b.step})
    # e76591a / before the fix: the silenced socket got no step after the stale close.
    assert steps and steps[-1] == 20 and len(steps) >= 5, [b.model_dump() for b in beats.seen]
    # One reconnect per silence of ws_silence at most (it doubles while useless): no loop.
    connects = comfy_emulator.stats["ws_connects"] - 1  # the stale socket's own connect
    assert 2 <= connects <= 2 + elapsed / timeouts.ws_silence, (connects, elapsed)


async def test_a_render_silenced_by_a_stale_socket_sees_the_end_over_http(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"step_delay": 20.0})
    # The silent socket is reopened only after a minute: the end must come from HTTP, read
    # every poll_interval (Beats.run gives up after 20 s; before the fix HTTP waited the minute).
    timeouts = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.2, ws_silence=60.0)
    beats, _elapsed = await _render_beside_a_stale_socket(comfy_emulator, tmp_path, timeouts)
    assert comfy_emulator.stats["ws_connects"] == 2  # the stale socket's and the render's
    assert beats.seen[-1].state == "downloading"


async def test_a_newer_follower_in_this_process_closes_the_older_socket_before_opening_its_own(
    comfy_emulator: Any,
) -> None:
    """Attempt 1 (timed out, still running in this worker) still holds the clientId when
    attempt 2 connects with it; attempt 1 ends afterwards. storyloom never has two sockets on
    one clientId: attempt 2 closes attempt 1's, and waits, before opening its own, so attempt 1's
    late exit cannot silence it."""
    comfy_emulator.set_faults({"step_delay": 20.0})  # 0.2 s per step, 20 steps
    frames_only = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=60.0, ws_silence=60.0)
    cid, pid = uuid.uuid4().hex, str(uuid.uuid4())
    kinds: list[str] = []
    async with ComfyClient(comfy_emulator.url, timeouts=frames_only) as one, \
            ComfyClient(comfy_emulator.url, timeouts=frames_only) as two:
        older = one.watch(cid)
        await older.__aenter__()
        try:
            await one.queue_prompt(txt2img_graph(steps=20), pid, client_id=cid)
            async with two.watch(cid) as newer:
                await older.__aexit__(None, None, None)  # attempt 1 ends after 2 connected
                async with asyncio.timeout(30):  # before the fix: silent, and HTTP a minute off
                    kinds = [e.kind async for e in newer.follow(pid)]
        finally:
            await older.__aexit__(None, None, None)
    assert kinds[-1] == "done" and "step" in kinds, kinds
    assert comfy_emulator.stats["ws_connects"] == 2  # no reconnect was needed
