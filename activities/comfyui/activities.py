"""The ``render`` activity: fill a template, run it on ComfyUI exactly once, download the image.

Re-attach rule (ARCHITECTURE rule 4): the prompt id is uuid5(workflow id / step), and every
attempt asks ComfyUI about it before submitting anything:

    COMPLETED  → download (no new execution)
    PENDING / RUNNING → follow it to the end
    FAILED     → ComfyExecutionError (final); out of GPU memory: submitted again (ComfyUI
                 runs a reused id anew), since the failure raised ComfyOutOfMemory (retryable)
    CANCELLED  → attempt 1 (a new request, e.g. a re-render of the step) submits again;
                 a retry (attempt > 1) raises JobCancelled: someone cancelled *this* request
    UNKNOWN    → (lease) upload the reference, fill the template, open the socket, submit, follow

A job lost while being followed (server restart) is submitted again once under the same id in
the same attempt (``resubmitted=True``); a second loss raises JobLost (retryable). An UNKNOWN id
that an earlier attempt had submitted was lost too (a restart drops the queue *and* the history,
so also a finished job): also resubmitted=True. "Had submitted" is the previous attempt's last
heartbeat ("submitted" or later) or, since heartbeats are throttled and the last ones die with a
killed worker, the render lease in the store (taken right before every post). Every such
resubmission is noted on the node in the store before the post (``RenderLease.note_resubmitted``),
so the note survives an attempt that dies after resubmitting and a later one that re-attaches.

Cancellation: only a cancel the user requested interrupts the prompt. ComfyUI interrupts at the
next node boundary or progress hook, so a cancel during the last node is too late: the job ends
completed. Then the finished picture is downloaded and returned (the workflow records it and
still ends Cancelled) rather than left unrecorded on the server. A worker shutting down
fails the attempt as retryable WorkerShutdown (the job keeps running; the next attempt
re-attaches); a timed-out or superseded attempt leaves the job to the newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.calllog import call_context
from activities.comfyui.adopt import adoptable_client
from activities.comfyui.client import ComfyClient
from activities.comfyui.files import safe_name
from activities.comfyui.follow import judge
from activities.comfyui.models import JobState, ProgressEvent
from activities.errors import ComfyOutOfMemory, JobLost, StoryloomError, to_application_error
from activities.gpu.lease import GpuLeases
from activities.templates import WorkflowManager, template_error
from workflows_temporal.contracts import LOST_JOB_NOTE, RenderInput, RenderProgress, RenderResult
from workflows_temporal.gpu_contracts import LeaseKind, LeaseRequest
from workflows_temporal.policies import RENDER_CANCEL_CONFIRM

__all__ = [
    "STORYLOOM_NAMESPACE", "ImageActivities", "RenderLease", "render_client_id", "render_prompt_id",
]

logger = logging.getLogger(__name__)

# Fixed forever: changing it would orphan every job of every running workflow.
STORYLOOM_NAMESPACE = uuid.UUID("06560564-c475-5cdf-8280-103fd5760769")
_PREFIX_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def render_prompt_id(workflow_id: str, step: str) -> str:
    """The deterministic ComfyUI prompt id of one render step (canonical lowercase UUID)."""
    return str(uuid.uuid5(STORYLOOM_NAMESPACE, f"{workflow_id}/{step}"))


def render_client_id(workflow_id: str, step: str) -> str:
    """The WebSocket clientId of one render step, sent as the prompt's ``client_id``.

    ComfyUI sends a prompt's execution frames only to the socket with that clientId, and a new
    socket with the same id takes over from an old one (protocol §4.1, §4.4). Deriving it from
    the step (not the worker) lets a later attempt, on any worker, re-attach and still receive
    the sampler progress and the terminal frame. 32 hex digits, like ComfyUI's own ids.
    """
    return uuid.uuid5(STORYLOOM_NAMESPACE, f"{workflow_id}/{step}/ws").hex


def _out_of_memory(error: dict[str, Any] | None) -> bool:
    err = error or {}
    return ComfyOutOfMemory.is_out_of_memory(str(err.get("exception_type", "")),
                                             str(err.get("exception_message", "")))

class RenderLease(Protocol):
    """Fencing for submits: True if ``attempt`` may submit ``prompt_id`` (a DB compare-and-set
    that a later attempt wins), False if a newer attempt owns it."""

    async def take(self, prompt_id: str, attempt: int) -> bool: ...

    async def submitted_before(self, prompt_id: str) -> bool:
        """True when an attempt took the lease of ``prompt_id`` (and so posted it, or was about
        to)."""
        ...

    async def note_resubmitted(self, node_id: str, note: str) -> None:
        """Record ``note`` on the node (idempotent: a note already there is not added again)."""
        ...


class _Heartbeat:
    """Sends RenderProgress on every event and every ``every`` seconds while open."""

    def __init__(self, prompt_id: str, every: float, state: str) -> None:
        self.progress = RenderProgress(prompt_id=prompt_id, state=state)
        self._every = every
        self._task: asyncio.Task[None] | None = None

    def send(self, **changes: Any) -> None:
        self.progress = self.progress.model_copy(update=changes)
        activity.heartbeat(self.progress)

    def on_event(self, event: ProgressEvent) -> None:
        if event.kind == "queued":
            self.send(state="queued", queue_position=event.queue_position)
        elif event.kind in ("started", "node"):
            self.send(state="running", queue_position=None, node=event.node or self.progress.node)
        elif event.kind == "step":
            self.send(state="running", queue_position=None, node=event.node,
                      step=event.value, steps=event.max)
        else:
            self.send()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            self.send()

    async def __aenter__(self) -> _Heartbeat:  # noqa: PYI034 - private helper
        self.send()
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _earlier_attempt_submitted() -> bool:
    """True when the previous attempt's last heartbeat says its prompt reached ComfyUI."""
    details = activity.info().heartbeat_details
    if not details or not isinstance(details[0], dict):
        return False
    try:
        last = RenderProgress.model_validate(details[0])
    except ValueError:
        return False
    return last.state in ("submitted", "queued", "running", "downloading")


class ImageActivities:
    """Image activities of one GPU's worker (run with concurrency 1 on its task queue).

    ``render`` is idempotent per (workflow id, step): at most one ComfyUI execution, whatever
    the number of attempts (except after ComfyUI itself lost the job). Failures reach Temporal as
    ApplicationError typed by class name; final ones are non-retryable.
    """

    def __init__(
        self, client: ComfyClient, templates: WorkflowManager, media_dir: Path,
        lease: RenderLease | None = None, *, heartbeat_every: float = 2.0,
        gpu_leases: GpuLeases | None = None, gpu: str = "",
    ) -> None:
        self.client = client
        self.templates = templates
        self.media_dir = media_dir
        self.lease = lease
        self.heartbeat_every = heartbeat_every
        self.gpu_leases = gpu_leases  # issue 13: the GPU scheduler's exclusive image lease
        self.gpu = gpu

    @activity.defn(name="render")
    async def render(self, inp: RenderInput) -> RenderResult:
        """Render ``inp`` and return the downloaded image's path and sha256 (see module doc)."""
        attempt = activity.info().attempt
        prompt_id = render_prompt_id(inp.workflow_id, inp.step)
        with call_context(workflow_id=inp.workflow_id, attempt=attempt, activity="render",
                          prompt_id=prompt_id):
            try:
                # "starting" until this prompt is known to have reached ComfyUI; a later
                # attempt reads it back to tell a lost job from one never submitted.
                earlier = _earlier_attempt_submitted()
                state = "submitted" if earlier else "starting"
                async with _Heartbeat(prompt_id, self.heartbeat_every, state) as beat, \
                        self._gpu_lease(inp):
                    adopted = await adoptable_client(inp, prompt_id, self.client)
                    if adopted is None:
                        return await self._render(inp, prompt_id, attempt, beat, earlier)
                    try:  # the previous GPU's ComfyUI has the job: follow it there
                        return await self._with_client(adopted)._render(
                            inp, prompt_id, attempt, beat, earlier)
                    finally:
                        await adopted.aclose()
            except asyncio.CancelledError:
                details = activity.cancellation_details()
                if details is None or details.cancel_requested:
                    # The user cancelled: stop this GPU job. Confirming can take as long as the
                    # node that is running (a checkpoint load, a VAE decode): keep heartbeating,
                    # or the attempt would end as a heartbeat timeout instead of a cancel.
                    async with _Heartbeat(prompt_id, self.heartbeat_every, "cancelling") as beat:
                        if await self._cancel(prompt_id) is JobState.COMPLETED:
                            # Too late (the cancel came during the last node): the picture
                            # exists. Hand it over; the workflow records it and still ends
                            # Cancelled (workflows_temporal/cancels.py).
                            return await self._fetch(inp, prompt_id, beat, resubmitted=False)
                elif details.worker_shutdown:
                    # The job goes on in ComfyUI: fail this attempt now (retryable) so the next
                    # one, on another worker, re-attaches without waiting for the heartbeat.
                    raise ApplicationError(
                        f"render of prompt {prompt_id} left a worker that is shutting down; "
                        "the next attempt re-attaches to it", type="WorkerShutdown",
                    ) from None
                # Timed out or superseded: a newer attempt follows the job; leave it running.
                raise
            except StoryloomError as exc:
                raise to_application_error(exc) from exc

    def _with_client(self, client: ComfyClient) -> ImageActivities:
        other = copy.copy(self)
        other.client = client
        return other

    def _gpu_lease(self, inp: RenderInput) -> contextlib.AbstractAsyncContextManager[object]:
        """The image lease of this GPU for the whole render (holder ``<workflow id>/<step>``,
        the one ``acquire_gpu`` was granted); no lease when the worker runs no scheduler."""
        if self.gpu_leases is None:
            return contextlib.nullcontext()
        return self.gpu_leases.hold(LeaseRequest(
            holder=f"{inp.workflow_id}/{inp.step}", kind=LeaseKind.IMAGE, gpu=self.gpu,
            worker=self.gpu_leases.worker, in_slot=True))

    async def _render(
        self, inp: RenderInput, prompt_id: str, attempt: int, beat: _Heartbeat, earlier: bool
    ) -> RenderResult:
        self.templates.manifest(inp.template)  # an unknown template fails before any request
        status = await self.client.job_status(prompt_id)
        logger.info("render %s: prompt %s is %s before submit", inp.workflow_id, prompt_id,
                    status.state)
        # An unknown id that an earlier attempt had submitted was lost by ComfyUI (restart).
        resubmitted = status.state is JobState.UNKNOWN and (
            earlier or await self._submitted_before(prompt_id))
        if resubmitted:
            logger.warning("render %s: ComfyUI lost prompt %s submitted by an earlier attempt; "
                           "submitting it again", inp.workflow_id, prompt_id)
        # A job that ran out of GPU memory is run again: VRAM is transient (the retry's point).
        oom = status.state is JobState.FAILED and _out_of_memory(status.error)
        if oom:
            logger.warning("render %s: prompt %s ran out of GPU memory before; submitting it "
                           "again", inp.workflow_id, prompt_id)
        if (status.state is JobState.FAILED and not oom) or (
                status.state is JobState.CANCELLED and attempt > 1):
            judge(status, prompt_id, self.client.base_url)  # raises the typed error
        if status.state is not JobState.COMPLETED:
            submit = status.state in (JobState.UNKNOWN, JobState.CANCELLED) or oom
            if not submit and self.lease is not None:
                # Re-attach: raise the fence so an older attempt still following this job can
                # no longer post it after a loss. Following needs no lease (a render moved to
                # another GPU starts its attempts at 1 again and may only watch and download).
                await self.lease.take(prompt_id, attempt)
            graph = await self._prepare(inp) if submit else None
            async with self.client.watch(render_client_id(inp.workflow_id, inp.step)) as watcher:
                if graph is not None:
                    await self._submit(inp, prompt_id, attempt, graph, beat, again=resubmitted)
                while True:
                    try:
                        async for event in watcher.follow(prompt_id):
                            beat.on_event(event)
                        break
                    except JobLost:
                        if resubmitted:
                            raise
                        resubmitted = True
                        logger.warning("render %s: ComfyUI lost prompt %s; submitting it again",
                                       inp.workflow_id, prompt_id)
                        await self._submit(inp, prompt_id, attempt, await self._prepare(inp), beat,
                                           again=True)
        return await self._fetch(inp, prompt_id, beat, resubmitted=resubmitted)

    async def _fetch(
        self, inp: RenderInput, prompt_id: str, beat: _Heartbeat, *, resubmitted: bool
    ) -> RenderResult:
        """Download the finished prompt's picture into media/ (name carries its hash)."""
        manifest = self.templates.manifest(inp.template)
        beat.send(state="downloading", queue_position=None)
        refs = await self.client.outputs(prompt_id, manifest.output_node)
        target = self.media_dir / safe_name(inp.workflow_id, fallback="workflow", limit=120)
        got = await self.client.download(refs[0], target, stem=f"{inp.node_id}-{inp.step}")
        logger.info("render %s: %s (%d bytes, sha256 %s)", inp.workflow_id, got.path, got.size,
                    got.sha256[:12])
        return RenderResult(prompt_id=prompt_id, image_path=str(got.path), sha256=got.sha256,
                            template=inp.template, resubmitted=resubmitted)

    async def _prepare(self, inp: RenderInput) -> dict[str, Any]:
        """Upload the reference picture (if any) and fill the template."""
        manifest = self.templates.manifest(inp.template)
        values: dict[str, Any] = {
            "positive": inp.positive, "negative": inp.negative or None, "seed": inp.seed,
            "width": inp.width, "height": inp.height, "checkpoint": inp.checkpoint,
            "filename_prefix": "storyloom/" + (_PREFIX_UNSAFE.sub("_", inp.workflow_id) or "w"),
        }
        if inp.reference_image:
            if "reference_image" not in manifest.parameters:
                raise template_error(inp.template, "this template takes no reference image; use "
                            "scene_with_reference", parameter="reference_image")
            ref = await self.client.upload_image(Path(inp.reference_image))
            values["reference_image"] = f"{ref.subfolder}/{ref.filename}" if ref.subfolder \
                else ref.filename
        params = {k: v for k, v in values.items() if k in manifest.parameters and v is not None}
        return self.templates.render(inp.template, params)

    async def _submit(
        self, inp: RenderInput, prompt_id: str, attempt: int, graph: dict[str, Any],
        beat: _Heartbeat, *, again: bool = False,
    ) -> None:
        """Post the prompt (fenced by the lease); ``again``: ComfyUI lost it, note that first."""
        await self._fence(prompt_id, attempt)
        if again and self.lease is not None:
            try:  # before the post: a later attempt that only re-attaches cannot know it
                await self.lease.note_resubmitted(inp.node_id, LOST_JOB_NOTE)
            except StoryloomError as exc:  # the result still says resubmitted=True
                logger.warning("render %s: could not note the resubmission on node %s: %s",
                               inp.workflow_id, inp.node_id, exc)
        number = await self.client.queue_prompt(
            graph, prompt_id, client_id=render_client_id(inp.workflow_id, inp.step),
            extra_data={"storyloom": {"workflow_id": inp.workflow_id, "node_id": inp.node_id,
                                      "step": inp.step, "attempt": attempt}},
        )
        logger.info("render %s: submitted prompt %s as number %d", inp.workflow_id, prompt_id,
                    number)
        beat.send(state="submitted")

    async def _fence(self, prompt_id: str, attempt: int) -> None:
        """Take the render lease before a post; JobLost (retryable) when a newer attempt holds it
        (also taken on re-attach, so an older attempt still following the job, its worker not
        yet told of the timeout, can never post it again after a loss)."""
        if self.lease is not None and not await self.lease.take(prompt_id, attempt):
            raise JobLost(
                f"attempt {attempt} no longer owns the render lease", service="comfyui",
                where=f"prompt {prompt_id}", hint="A newer attempt is rendering this step",
            )

    async def _submitted_before(self, prompt_id: str) -> bool:
        return self.lease is not None and await self.lease.submitted_before(prompt_id)

    async def _cancel(self, prompt_id: str) -> JobState | None:
        """Cancel only this prompt and wait (up to policies.RENDER_CANCEL_CONFIRM) until ComfyUI
        confirms it; a failure to cancel must not hide the cancellation. Returns the job's state
        when ComfyUI did not cancel it (COMPLETED: the interrupt came during the last node, which
        always runs to its end), else None."""
        confirm = RENDER_CANCEL_CONFIRM.total_seconds()
        try:
            cancelled = await asyncio.wait_for(
                self.client.cancel(prompt_id, confirm_within=confirm), confirm + 30.0)
            logger.info("render cancelled: prompt %s cancelled=%s", prompt_id, cancelled)
            if not cancelled:
                state = (await self.client.job_status(prompt_id)).state
                logger.warning("render cancelled: ComfyUI did not cancel prompt %s; it is %s",
                               prompt_id, state)
                return state
        except (StoryloomError, TimeoutError) as exc:
            logger.warning("render cancelled: could not cancel prompt %s: %s", prompt_id, exc)
        return None
