"""The CLI's exit codes and the one-paragraph error it shows instead of a traceback."""

from __future__ import annotations

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import FailureError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliFailure", "root_cause", "root_message"]

EXIT_OK = 0
EXIT_FAILED = 1  # the work failed (e.g. the scene could not be written)
EXIT_USAGE = 2  # bad usage or configuration (e.g. Temporal unreachable, unknown template)


class CliFailure(Exception):
    """A failure the user can act on: ``message`` is one readable paragraph; ``code`` the exit."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def root_cause(err: BaseException) -> BaseException:
    """The innermost Temporal failure: the activity's own error, not its wrappers."""
    cause = err
    while isinstance(cause, FailureError | WorkflowFailureError) and cause.cause is not None:
        cause = cause.cause
    return cause


def root_message(err: BaseException) -> str:
    """What went wrong, in the words of the step that failed."""
    cause = root_cause(err)
    return getattr(cause, "message", None) or str(cause) or type(cause).__name__
