"""The render activity when its worker stops or its attempt is superseded: the ComfyUI job is
never interrupted by anyone but the user, and a job lost between attempts is reported."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import ApplicationError

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import JobState
from tests.fixtures.common import wait_until
from tests.unit.test_render_activity import Beats, assert_image, comfy, images, request
from workflows_temporal.contracts import RenderProgress

__all__ = ["comfy", "images"]  # fixtures shared with test_render_activity


def with_last_beat(beats: Beats, state: str, prompt_id: str) -> Beats:
    """An attempt that sees the previous attempt's last heartbeat."""
    last = RenderProgress(prompt_id=prompt_id, state=state).model_dump()
    beats.env.info = dataclasses.replace(beats.env.info, heartbeat_details=[last])
    return beats


async def test_worker_shutdown_fails_retryably_and_leaves_the_job_running(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    # 0.5 s a step at the fixture's time scale: the job cannot finish before the cancel lands,
    # even on a loaded machine (at 2.0, 20 ms a step, it once did: a flaky pass of the render).
    comfy_emulator.set_faults({"step_delay": 50.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    first = Beats()
    task = asyncio.create_task(first.run(images, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    first.env.cancel(ActivityCancellationDetails(worker_shutdown=True))
    with pytest.raises(ApplicationError) as caught:
        await task
    assert caught.value.type == "WorkerShutdown" and not caught.value.non_retryable
    assert (await comfy.job_status(pid)).state is JobState.RUNNING

    comfy_emulator.set_faults({})  # the rest of the job runs fast
    result = await with_last_beat(Beats(attempt=2), first.seen[-1].state, pid).run(images, inp)
    assert_image(result, images, inp)
    assert not result.resubmitted
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}
    assert comfy_emulator.stats["interrupted"] == 0


async def test_a_timed_out_attempt_leaves_the_job_to_the_newer_one(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 2.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    stale = Beats()
    task = asyncio.create_task(stale.run(images, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    stale.env.cancel(ActivityCancellationDetails(timed_out=True, not_found=True))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await comfy.job_status(pid)).state is JobState.RUNNING
    assert comfy_emulator.stats["interrupted"] == 0


async def test_a_job_lost_between_attempts_is_submitted_again_and_reported(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await comfy.queue_prompt(images.templates.render(inp.template, {
        "positive": inp.positive, "seed": inp.seed, "width": 64, "height": 64}), pid)
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    comfy_emulator.set_faults({"restart": True})  # the worker that followed it died too

    result = await with_last_beat(Beats(attempt=2), "running", pid).run(images, inp)
    assert result.resubmitted
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}


async def test_an_attempt_that_died_before_submitting_is_not_a_lost_job(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    result = await with_last_beat(Beats(attempt=2), "starting", pid).run(images, inp)
    assert not result.resubmitted
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}
