"""Cancel a scene or story run and say truthfully what happened to it.

A cancel is a request the workflow processes in its next workflow task. When that task keeps
failing (a bug, a bad input of an older version) or no worker polls the workflow queue, the
request would wait forever; then the run is terminated instead, and the user is told so. A
story waits for its scenes' cancels, so a scene whose task keeps failing is terminated too. So a
cancel always ends a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from starter.outcome import EXIT_USAGE, CliFailure
from starter.pollers import live_pollers
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

__all__ = ["CancelOutcome", "cancel_run", "describe_run"]

_POLL_S = 0.3
_NO_POLLER_GRACE_S = 3.0
# A workflow task may time out once in a healthy run (a worker killed mid-task); a task on its
# third attempt is failing, and a cancel cannot get through it.
_FAILING_ATTEMPTS = 3


@dataclass(frozen=True)
class CancelOutcome:
    """How the run ended (``status``: CANCELED, COMPLETED, FAILED, TERMINATED, ... or RUNNING
    when it is still stopping) and the sentence that says so."""

    status: str
    message: str


async def describe_run(client: Client, workflow_id: str, what: str) -> Any:
    """The run's description; CliFailure (exit 2) naming the namespace when there is none."""
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise CliFailure(f"There is no {what} {workflow_id!r} in Temporal namespace "
                             f"{client.namespace!r}: check the id (the Temporal UI lists "
                             "them).", EXIT_USAGE) from exc
        raise


def _status(desc: Any) -> str:
    return desc.status.name if desc.status else "RUNNING"


async def _why_stuck(client: Client, desc: Any, waited: float) -> str | None:
    """Why the run cannot process the cancel, or None while it may still do so."""
    task = desc.raw_description.pending_workflow_task
    if desc.raw_description.HasField("pending_workflow_task") and task.attempt >= _FAILING_ATTEMPTS:
        return f"its workflow task has failed {task.attempt - 1} time(s) and keeps failing"
    if waited >= _NO_POLLER_GRACE_S:
        queue = desc.task_queue or SCENE_WORKFLOW_QUEUE
        if not await live_pollers(client, queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW):
            return f"no worker polls its task queue {queue}"
    return None


async def cancel_run(client: Client, workflow_id: str, *, what: str = "scene",
                     wait_s: float = 15.0) -> CancelOutcome:
    """Request cancellation of ``workflow_id`` and wait up to ``wait_s`` for it to end.

    Raises CliFailure (exit 2) when there is no such run or it already ended. Terminates the
    run when it cannot process the cancel (see the module docstring).
    """
    desc = await describe_run(client, workflow_id, what)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise CliFailure(f"The {what} {workflow_id} already ended ({_status(desc).lower()}): "
                         "there is nothing to cancel.", EXIT_USAGE)
    handle = client.get_workflow_handle(workflow_id)
    await handle.cancel()
    started = time.monotonic()
    ended_children: list[str] = []
    while True:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return _ended(what, workflow_id, _status(desc), ended_children)
        waited = time.monotonic() - started
        ended_children += await _end_stuck_children(client, desc)
        stuck = await _why_stuck(client, desc, waited)
        if stuck is not None:
            await handle.terminate(reason=f"cancel requested by the user, but {stuck}")
            return CancelOutcome("TERMINATED", f"The {what} {workflow_id} could not take the "
                                 f"cancel ({stuck}), so it was terminated.")
        if waited >= wait_s:
            return CancelOutcome("RUNNING", f"Cancel requested: the {what} {workflow_id} is "
                                 "still stopping (a running step is finishing its cleanup); "
                                 f"follow it with `storyloom watch {workflow_id}`.")
        await asyncio.sleep(_POLL_S)


async def _end_stuck_children(client: Client, desc: Any) -> list[str]:
    """Terminate the running children (a story's scenes) whose workflow task keeps failing: the
    parent waits for each child's cancel, which such a child never takes. Their ids."""
    ended = []
    for child in desc.raw_description.pending_children:
        child_handle = client.get_workflow_handle(child.workflow_id)
        with contextlib.suppress(RPCError):
            child_desc = await child_handle.describe()
            task = child_desc.raw_description.pending_workflow_task
            if (child_desc.status == WorkflowExecutionStatus.RUNNING
                    and child_desc.raw_description.HasField("pending_workflow_task")
                    and task.attempt >= _FAILING_ATTEMPTS):
                await child_handle.terminate(reason="its parent was cancelled by the user, "
                                             "and its workflow task keeps failing")
                ended.append(child.workflow_id)
    return ended


def _ended(what: str, workflow_id: str, status: str, children: list[str]) -> CancelOutcome:
    if children:
        return CancelOutcome(status, f"The {what} {workflow_id} ended {status.lower()}: its "
                             f"scene {', '.join(children)} could not take the cancel (its "
                             "workflow task kept failing), so that scene was terminated.")
    if status == "CANCELED":
        return CancelOutcome(status, f"The {what} {workflow_id} is cancelled.")
    return CancelOutcome(status, f"The {what} {workflow_id} ended {status.lower()} before the "
                         "cancel reached it.")
