"""The CLI's exit codes and the one-paragraph error it shows instead of a traceback."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliFailure"]

EXIT_OK = 0
EXIT_FAILED = 1  # the work failed (e.g. the scene could not be written)
EXIT_USAGE = 2  # bad usage or configuration (e.g. Temporal unreachable, unknown template)


class CliFailure(Exception):
    """A failure the user can act on: ``message`` is one readable paragraph; ``code`` the exit."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
