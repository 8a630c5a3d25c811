"""Rendering on a GPU the scheduler grants (issue 13), from SceneWorkflow and RetryImageWorkflow.

Deterministic. ``render_on_a_gpu`` asks ``acquire_gpu`` for a GPU (it waits while other stories
use them), then runs ``render`` on that GPU's task queue, where the render activity holds the
same lease (holder ``<workflow id>/<step>``). If the granted GPU's worker is gone (nobody picks
the render up within ``RENDER_PICKUP``), it asks again: the scheduler has dropped that GPU by
then, so the render goes to another one. A render whose job the first GPU had already accepted
is adopted: the next GPU's render activity first asks the first GPU's ComfyUI
(``RenderInput.adopt_from``) and follows the job there if it has it, so no job runs twice
(rule 4); a GPU whose ComfyUI address is unknown keeps a render it had accepted (last heartbeat
submitted or later).
Gated by ``GPU_SCHEDULER_PATCH`` in the callers: histories recorded before it replay unchanged.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.contracts import RenderInput, RenderResult
    from workflows_temporal.gpu_contracts import LeaseGrant, LeaseKind, LeaseRequest
    from workflows_temporal.policies import RENDER_PICKUP, TRY_GPU_TIMEOUT, image_queue
    from workflows_temporal.steps import run_step

__all__ = ["FAST_GRANT_PATCH", "GPU_SCHEDULER_PATCH", "MAX_MOVES", "render_on_a_gpu"]

GPU_SCHEDULER_PATCH = "gpu-scheduler"
FAST_GRANT_PATCH = "gpu-fast-grant"  # an idle GPU is granted by a local activity
MAX_MOVES = 20  # renders not picked up: 20 × RENDER_PICKUP (10 min) before the image fails
_ACCEPTED = ("submitted", "queued", "running", "downloading")


def _not_picked_up(err: ActivityError) -> TimeoutError | None:
    cause = err.cause
    if isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
        return cause
    return None


def _accepted(timeout: TimeoutError) -> bool:
    """True when the last heartbeat of an earlier attempt says ComfyUI had the job (the
    details ride on this timeout or on the earlier attempt's failure, its cause)."""
    failure: BaseException | None = timeout
    while failure is not None:
        if isinstance(failure, TimeoutError) and failure.last_heartbeat_details:
            last = failure.last_heartbeat_details[0]
            return isinstance(last, dict) and last.get("state") in _ACCEPTED
        failure = failure.cause if isinstance(failure, FailureError) else None
    return False


async def _try_gpu(request: LeaseRequest) -> LeaseGrant | None:
    """The grant when the GPU is free now (a local activity, no task-queue round trip)."""
    try:
        grant = await workflow.execute_local_activity(
            "try_gpu", request, result_type=LeaseGrant,
            start_to_close_timeout=TRY_GPU_TIMEOUT, retry_policy=RetryPolicy(maximum_attempts=1))
    except ActivityError:
        return None
    return grant if grant.granted else None


async def render_on_a_gpu(inp: RenderInput, summary: str, gpu: str = "") -> RenderResult:
    """Render ``inp`` on a granted GPU (``gpu`` pins it; "" lets the scheduler choose).

    Raises ActivityError like the render step itself (the caller records a failed image).
    """
    holder = f"{inp.workflow_id}/{inp.step}"
    pinned: str | None = gpu or None
    last: ActivityError | None = None
    for _ in range(MAX_MOVES):
        request = LeaseRequest(holder=holder, kind=LeaseKind.IMAGE, gpu=pinned)
        grant = await _try_gpu(request) if workflow.patched(FAST_GRANT_PATCH) else None
        if grant is None:
            grant = await run_step("acquire_gpu", request, f"wait for a GPU: {summary}",
                                   LeaseGrant)
        try:
            return await run_step(
                "render", inp, summary, RenderResult,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                task_queue=image_queue(grant.gpu or ""),
                schedule_to_start_timeout=RENDER_PICKUP,
            )
        except ActivityError as err:
            timeout = _not_picked_up(err)
            if timeout is None:
                raise
            last = err
            if grant.comfyui_url:
                # That GPU's ComfyUI may have the job: the next GPU's render asks it first and
                # follows the job there if it has it (no second job), else renders it anew.
                inp = inp.model_copy(update={"adopt_from": grant.comfyui_url})
            elif _accepted(timeout):
                pinned = grant.gpu or ""  # its ComfyUI is unknown: wait for its worker
            workflow.logger.warning(
                "render %s: GPU %r did not pick it up within %s; asking for %s",
                holder, grant.gpu, RENDER_PICKUP,
                "another GPU" if pinned is None else f"GPU {pinned!r} again")
    assert last is not None
    raise last
