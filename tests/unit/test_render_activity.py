"""The render activity against the ComfyUI emulator: happy path, every re-attach branch, a job
lost to a restart, and cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.models import ComfyTimeouts, JobState
from activities.templates import WorkflowManager
from tests.fixtures.common import wait_until
from workflows_temporal.contracts import RenderInput, RenderProgress, RenderResult

FAST = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.05, ws_silence=0.5)
PNG = b"\x89PNG\r\n\x1a\n" + b"reference" * 20


@pytest.fixture
async def comfy(comfy_emulator: Any) -> AsyncIterator[ComfyClient]:
    async with ComfyClient(comfy_emulator.url, timeouts=FAST) as client:
        yield client


@pytest.fixture
def images(comfy: ComfyClient, tmp_path: Path) -> ImageActivities:
    return ImageActivities(comfy, WorkflowManager(), tmp_path / "media", heartbeat_every=0.1)


class Beats:
    """An ActivityEnvironment that keeps every heartbeat."""

    def __init__(self, attempt: int = 1) -> None:
        self.env = ActivityEnvironment()
        self.env.info = dataclasses.replace(self.env.info, attempt=attempt)
        self.seen: list[RenderProgress] = []
        self.at: list[float] = []
        self.env.on_heartbeat = self._beat

    def _beat(self, *details: Any) -> None:
        self.seen.append(details[0])
        self.at.append(time.monotonic())

    def longest_gap(self) -> float:
        return max(b - a for a, b in zip(self.at, self.at[1:], strict=False))

    async def run(self, images: ImageActivities, inp: RenderInput) -> RenderResult:
        result: RenderResult = await asyncio.wait_for(self.env.run(images.render, inp), 20)
        return result


def request(**kw: Any) -> RenderInput:
    values: dict[str, Any] = {"workflow_id": f"scene-{uuid.uuid4()}", "node_id": "n1",
                              "template": "scene", "positive": "a fox in the snow", "seed": 7,
                              "width": 64, "height": 64}
    return RenderInput(**{**values, **kw})


def graph_of(images: ImageActivities, inp: RenderInput) -> dict[str, Any]:
    return images.templates.render(inp.template, {
        "positive": inp.positive, "seed": inp.seed, "width": inp.width, "height": inp.height,
        "filename_prefix": "storyloom/" + inp.workflow_id.replace(".", "_")})


def assert_image(result: RenderResult, images: ImageActivities, inp: RenderInput) -> None:
    path = Path(result.image_path)
    assert path.parent == images.media_dir / inp.workflow_id
    assert hashlib.sha256(path.read_bytes()).hexdigest() == result.sha256
    assert path.name == f"n1-render-{result.sha256[:12]}.png"


async def test_render_writes_the_image_and_heartbeats_progress(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    inp, beats = request(), Beats()
    result = await beats.run(images, inp)
    pid = render_prompt_id(inp.workflow_id, "render")
    assert result.prompt_id == pid == str(uuid.UUID(pid)) and not result.resubmitted
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}
    assert {b.state for b in beats.seen} >= {"submitted", "running", "downloading"}
    assert any(b.steps == 20 and b.step > 0 and b.node == "3" for b in beats.seen)


async def test_retry_after_completion_downloads_without_running_again(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    inp = request()
    first = await Beats().run(images, inp)
    Path(first.image_path).unlink()
    again = await Beats(attempt=2).run(images, inp)
    assert again.sha256 == first.sha256 and Path(again.image_path).exists()
    assert comfy_emulator.stats["executed_by_prompt"] == {first.prompt_id: 1}
    assert comfy_emulator.stats["submitted"] == 1


async def test_retry_reattaches_to_a_running_prompt(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})  # 0.05 s per step: one second of sampling
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await comfy.queue_prompt(graph_of(images, inp), pid)  # what attempt 1 did before dying
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    beats = Beats(attempt=2)
    result = await beats.run(images, inp)
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}
    assert comfy_emulator.stats["submitted"] == 1  # no second submission
    assert "running" in {b.state for b in beats.seen}


async def test_retry_reattaches_to_a_pending_prompt_and_reports_the_queue(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    from tests.fixtures.comfy_emulator import txt2img_graph

    comfy_emulator.set_faults({"step_delay": 5.0})
    blocker = str(uuid.uuid4())
    await comfy.queue_prompt(txt2img_graph(steps=20, prefix="blocker"), blocker)
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await comfy.queue_prompt(graph_of(images, inp), pid)
    assert (await comfy.job_status(pid)).state is JobState.PENDING
    beats = Beats(attempt=2)
    result = await beats.run(images, inp)
    assert_image(result, images, inp)
    assert any(b.state == "queued" and b.queue_position == 1 for b in beats.seen)  # behind 1
    assert beats.longest_gap() < 1.0  # the timer keeps beating while the prompt waits
    assert comfy_emulator.stats["executed_by_prompt"] == {blocker: 1, pid: 1}


async def test_retry_of_a_failed_prompt_fails_for_good_without_running_again(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"error_at_node": "KSampler"})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await comfy.queue_prompt(graph_of(images, inp), pid)
    await wait_until(lambda: comfy_emulator.stats["failed"] == 1, what="the failure")
    comfy_emulator.set_faults({})  # even with the fault gone, the same request is not re-run
    with pytest.raises(ApplicationError) as caught:
        await Beats(attempt=2).run(images, inp)
    assert caught.value.type == "ComfyExecutionError" and caught.value.non_retryable
    assert "KSampler" in str(caught.value)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 1}


async def test_a_fresh_failure_is_final_and_names_the_node(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"error_at_node": "VAEDecode"})
    with pytest.raises(ApplicationError) as caught:
        await Beats().run(images, request())
    assert caught.value.type == "ComfyExecutionError" and caught.value.non_retryable
    assert "node 8 (VAEDecode)" in str(caught.value)


async def test_prompt_lost_in_a_restart_is_submitted_again_once(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    task = asyncio.create_task(Beats().run(images, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] >= 3, what="sampling")
    comfy_emulator.set_faults({"restart": True})
    result = await task
    assert result.resubmitted and result.prompt_id == pid
    assert_image(result, images, inp)
    assert comfy_emulator.stats["restarts"] == 1
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}


async def test_a_second_loss_is_a_retryable_job_lost(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})
    inp = request()
    task = asyncio.create_task(Beats().run(images, inp))
    for restarts in (1, 2):
        await wait_until(lambda r=restarts: comfy_emulator.stats["sampler_steps"] >= 3 * r,
                         what="sampling")
        comfy_emulator.set_faults({"step_delay": 5.0, "restart": True})
    with pytest.raises(ApplicationError) as caught:
        await task
    assert caught.value.type == "JobLost" and not caught.value.non_retryable


async def test_cancel_interrupts_the_prompt(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    beats = Beats()
    task = asyncio.create_task(beats.run(images, inp))
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    beats.env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await comfy.job_status(pid)).state is JobState.CANCELLED
    assert comfy_emulator.stats["interrupted"] == 1 and comfy_emulator.stats["completed"] == 0


async def test_a_cancelled_prompt_is_rendered_again_only_for_a_new_request(
    images: ImageActivities, comfy: ComfyClient, comfy_emulator: Any
) -> None:
    comfy_emulator.set_faults({"step_delay": 5.0})
    inp = request()
    pid = render_prompt_id(inp.workflow_id, inp.step)
    await comfy.queue_prompt(graph_of(images, inp), pid)
    await wait_until(lambda: comfy_emulator.stats["sampler_steps"] > 0, what="sampling")
    assert await comfy.cancel(pid)
    with pytest.raises(ApplicationError) as caught:  # a retry of the cancelled request
        await Beats(attempt=2).run(images, inp)
    assert caught.value.type == "JobCancelled" and caught.value.non_retryable
    comfy_emulator.set_faults({})
    result = await Beats(attempt=1).run(images, inp)  # a new request for the same step
    assert_image(result, images, inp)
    assert comfy_emulator.stats["executed_by_prompt"] == {pid: 2}


async def test_reference_image_is_uploaded_and_used(
    images: ImageActivities, comfy_emulator: Any, tmp_path: Path
) -> None:
    picture = tmp_path / "mira.png"
    from emulators.comfyui.png import encode_png  # a real PNG, since LoadImage decodes it

    picture.write_bytes(encode_png(8, 8, [bytes([200, 10, 10]) * 8] * 8, {}))
    inp = request(template="scene_with_reference", reference_image=str(picture))
    result = await Beats().run(images, inp)
    assert_image(result, images, inp)
    assert (comfy_emulator.root_dir / "input" / "storyloom" / "mira.png").read_bytes() == \
        picture.read_bytes()


async def test_bad_parameters_fail_for_good_before_submitting(
    images: ImageActivities, comfy_emulator: Any
) -> None:
    with pytest.raises(ApplicationError) as caught:
        await Beats().run(images, request(width=5000))
    assert caught.value.type == "TemplateError" and caught.value.non_retryable
    assert "width" in str(caught.value) and comfy_emulator.stats["submitted"] == 0


async def test_an_attempt_without_the_lease_submits_nothing(
    comfy: ComfyClient, comfy_emulator: Any, tmp_path: Path
) -> None:
    class NewerAttemptHoldsIt:
        async def take(self, prompt_id: str, attempt: int) -> bool:
            return attempt >= 3

        async def submitted_before(self, prompt_id: str) -> bool:
            return False

        async def note_resubmitted(self, node_id: str, note: str) -> None:
            raise AssertionError("nothing was lost")

    images = ImageActivities(comfy, WorkflowManager(), tmp_path / "media",
                             lease=NewerAttemptHoldsIt())
    inp = request()
    with pytest.raises(ApplicationError) as caught:
        await Beats(attempt=2).run(images, inp)
    assert caught.value.type == "JobLost" and not caught.value.non_retryable
    assert comfy_emulator.stats["submitted"] == 0
    assert_image(await Beats(attempt=3).run(images, inp), images, inp)
