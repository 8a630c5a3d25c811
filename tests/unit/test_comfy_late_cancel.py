"""A user's cancel that lands during ComfyUI's last node is too late: ComfyUI answers
``{"cancelled": true}`` and still completes the job with its outputs (realcomfy findings 3b; the
emulator does the same). The render must not leave that picture unrecorded: it hands it over,
and the workflow records it and ends Cancelled (tests/workflows/test_scene_workflow.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState
from activities.templates import WorkflowManager
from tests.fixtures.common import wait_until
from tests.unit.test_render_activity import Beats, assert_image, request

FAST = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.05, ws_silence=0.5)


async def test_a_cancel_during_the_last_node_hands_over_the_picture_comfyui_finished(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    # SaveImage, the last node, takes 3 s with no interrupt check inside (as on a real server).
    comfy_emulator.set_faults({"slow_node_class": "SaveImage", "slow_node_seconds": 300.0})
    save = WorkflowManager().manifest("scene").output_node
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    beats = Beats()
    async with ComfyClient(comfy_emulator.url, timeouts=FAST) as client:
        images = ImageActivities(client, WorkflowManager(), tmp_path / "media",
                                 heartbeat_every=0.1)
        task = asyncio.create_task(beats.run(images, inp))
        await wait_until(lambda: comfy_emulator.core.current_node == save, what="the SaveImage")
        beats.env.cancel()
        # e76591a: CancelledError, and the picture ComfyUI made stayed unrecorded on the server.
        result = await task
        assert (await client.job_status(pid)).state is JobState.COMPLETED
    assert_image(result, images, inp)
    stats = comfy_emulator.stats
    assert stats["completed"] == 1 and stats["interrupted"] == 0
    assert stats["executed_by_prompt"] == {pid: 1}
    states = [b.state for b in beats.seen]
    assert "cancelling" in states and states[-1] == "downloading", states
    async with httpx.AsyncClient(base_url=comfy_emulator.url) as http:
        job = (await http.get(f"/api/jobs/{pid}")).json()
    assert job["status"] == "completed" and job["outputs_count"] == 1
