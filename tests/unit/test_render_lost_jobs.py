"""Jobs ComfyUI lost (restart: queue and history gone) while no attempt was following them, over
the emulator and a real store: each resubmission is noted on the node, and an older attempt
still following a job never posts it again (the chaos test's "a prompt ran twice, no note")."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.activity import ActivityCancellationDetails
from temporalio.exceptions import ApplicationError

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.store.repository import RenderLease, StoryRepository
from activities.templates import WorkflowManager
from tests.fixtures.common import wait_until
from tests.unit.test_render_activity import Beats, comfy, request
from tests.unit.test_render_recovery import with_last_beat
from workflows_temporal.contracts import (
    LOST_JOB_NOTE,
    LoadContextInput,
    RenderInput,
    RenderResult,
    SaveNodeInput,
)

__all__ = ["comfy"]  # fixture shared with test_render_activity


@pytest.fixture
def leased(comfy: ComfyClient, repo: StoryRepository, tmp_path: Path) -> ImageActivities:
    """Image activities fenced by the store's render lease, as a worker runs them."""
    return ImageActivities(comfy, WorkflowManager(), tmp_path / "media",
                           lease=RenderLease(repo), heartbeat_every=0.1)


async def scene_request(repo: StoryRepository) -> RenderInput:
    """A render request of a real node (so notes can be read back)."""
    wid = f"scene-{uuid.uuid4().hex[:8]}"
    ctx = await repo.load_context(LoadContextInput(workflow_id=wid, direction="A lighthouse"))
    saved = await repo.save_node(SaveNodeInput(
        workflow_id=wid, story_id=ctx.story_id, parent_node_id=None, direction="A lighthouse",
        title="The Lighthouse", text="The keeper lit the lamp.", summary="lamp lit",
        model="llama3.2"))
    return request(workflow_id=wid, node_id=saved.node_id)


async def notes_of(repo: StoryRepository, node_id: str) -> list[str]:
    node = await repo.get_node(node_id)
    return [entry["text"] for entry in node.notes or []]


def assert_picture(result: RenderResult) -> None:
    path = Path(result.image_path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result.sha256


async def killed_while_running(images: ImageActivities, inp: RenderInput,
                               comfy_emulator: Any, attempt: int = 1,
                               last: str | None = None) -> Beats:
    """Run an attempt until its job samples, then end it the way a killed worker's attempt
    ends for the server (a heartbeat timeout): the job keeps running in ComfyUI."""
    pid = render_prompt_id(inp.workflow_id, inp.step)
    beats = Beats(attempt=attempt) if last is None else \
        with_last_beat(Beats(attempt=attempt), last, pid)
    steps = comfy_emulator.stats["sampler_steps"]
    task = asyncio.create_task(beats.run(images, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > steps, what="sampling")
    beats.env.cancel(ActivityCancellationDetails(timed_out=True, not_found=True))
    with pytest.raises(asyncio.CancelledError):
        await task
    return beats


async def test_a_job_lost_after_a_submit_the_server_never_heard_of_is_noted(
    leased: ImageActivities, repo: StoryRepository, comfy_emulator: Any
) -> None:
    # Attempt 1 posts the prompt; its worker dies before the throttled "submitted" heartbeat
    # leaves (the server's last details say "starting"); ComfyUI restarts while the job runs.
    comfy_emulator.set_faults({"step_delay": 2.0})
    inp = await scene_request(repo)
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await killed_while_running(leased, inp, comfy_emulator)
    comfy_emulator.set_faults({"restart": True})

    result = await with_last_beat(Beats(attempt=2), "starting", pid).run(leased, inp)
    assert_picture(result)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}
    assert result.resubmitted
    assert LOST_JOB_NOTE in await notes_of(repo, inp.node_id)


async def test_a_resubmission_stays_noted_when_its_attempt_dies_and_a_later_one_reattaches(
    leased: ImageActivities, repo: StoryRepository, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 2.0})
    inp = await scene_request(repo)
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await killed_while_running(leased, inp, comfy_emulator)
    comfy_emulator.set_faults({"step_delay": 2.0, "restart": True})
    # Attempt 2 submits it again, then dies too; attempt 3 only re-attaches to that job.
    await killed_while_running(leased, inp, comfy_emulator, attempt=2, last="running")
    comfy_emulator.set_faults({})

    result = await with_last_beat(Beats(attempt=3), "running", pid).run(leased, inp)
    assert_picture(result)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}
    assert LOST_JOB_NOTE in await notes_of(repo, inp.node_id)


async def test_an_older_attempt_still_following_never_posts_a_lost_job_again(
    leased: ImageActivities, repo: StoryRepository, comfy_emulator: Any
) -> None:
    # Attempt 1's worker lives on after its attempt timed out on the server (it has not heard
    # yet); attempt 2 re-attached and then its worker died. ComfyUI restarts: the stale attempt
    # must not post the job again (attempt 3 does, and notes it).
    comfy_emulator.set_faults({"step_delay": 2.0})
    inp = await scene_request(repo)
    pid = render_prompt_id(inp.workflow_id, inp.step)
    stale = asyncio.create_task(Beats().run(leased, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    newer = with_last_beat(Beats(attempt=2), "running", pid)
    new = asyncio.create_task(newer.run(leased, inp))
    await wait_until(lambda: any(b.state == "running" for b in newer.seen),
                     what="attempt 2 following the job")
    newer.env.cancel(ActivityCancellationDetails(timed_out=True, not_found=True))
    with pytest.raises(asyncio.CancelledError):
        await new
    comfy_emulator.set_faults({"restart": True})

    with pytest.raises(ApplicationError) as caught:
        await stale
    assert caught.value.type == "JobLost" and not caught.value.non_retryable
    assert comfy_emulator.stats["submitted"] == 1

    result = await with_last_beat(Beats(attempt=3), "running", pid).run(leased, inp)
    assert_picture(result)
    assert result.resubmitted
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}
    assert LOST_JOB_NOTE in await notes_of(repo, inp.node_id)
