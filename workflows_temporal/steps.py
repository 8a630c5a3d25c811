"""Running one named activity step from a workflow, and reading why a step failed.

Options come from ``policies.STEPS`` only (one place per fact); the failure helpers walk an
``ActivityError``/``ChildWorkflowError`` chain to the activity's own error, so the user reads
the service's message ("ollama: model 'x' not found ...") rather than "Activity task failed".
Deterministic; safe inside the workflow sandbox.
"""

from __future__ import annotations

from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.policies import STEPS, StepPolicy
    from workflows_temporal.scene_prompts import one_line, squeezed

__all__ = ["failure_reason", "failure_type", "final_error", "run_step", "step_options"]

T = TypeVar("T")


def step_options(policy: StepPolicy, summary: str) -> dict[str, Any]:
    """The ``execute_activity`` keyword arguments of one step (queue, timeouts, retry, summary)."""
    return {
        "task_queue": policy.task_queue,
        "start_to_close_timeout": policy.start_to_close,
        "schedule_to_close_timeout": policy.schedule_to_close,
        "heartbeat_timeout": policy.heartbeat,
        "retry_policy": policy.retry,
        "summary": one_line(summary, 200),
    }


async def run_step(
    step: str, arg: Any, summary: str, result_type: type[T] | None = None, **extra: Any
) -> T:
    """Execute activity ``step`` (its registered name) with the options of ``STEPS[step]``.

    Raises ``ActivityError`` when the step fails for good (retries exhausted or non-retryable).
    """
    options = step_options(STEPS[step], summary) | extra
    result: T = await workflow.execute_activity(step, arg, result_type=result_type, **options)
    return result


def _root_failure(err: BaseException) -> BaseException:
    """The innermost Temporal failure: the activity's ApplicationError, timeout or cancel."""
    current: BaseException = err
    while isinstance(current, FailureError) and current.cause is not None:
        current = current.cause
    return current


def failure_reason(err: BaseException) -> str:
    """The cause's message, on one line, shortened in the middle so its fix hint stays."""
    root = _root_failure(err)
    text = root.message if isinstance(root, FailureError) else str(root)
    return squeezed(text or type(root).__name__)


def failure_type(err: BaseException) -> str | None:
    """The cause's ApplicationError type (the error class name in activities/errors.py)."""
    root = _root_failure(err)
    return root.type if isinstance(root, ApplicationError) else None


def final_error(err: BaseException, prefix: str = "") -> ApplicationError:
    """A non-retryable ApplicationError that fails the workflow with the cause's message."""
    return ApplicationError(
        prefix + failure_reason(err), type=failure_type(err) or "SceneFailed", non_retryable=True
    )
