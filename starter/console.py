"""How storyloom writes to the user's screen or pipe: whole lines off a terminal, a reader
that leaves early (``storyloom list | head -1``) is not an error, and counts read as English.

* ``screen()``: the rich Console of a command's normal output. On a terminal it fits the
  terminal; anywhere else (a pipe, a file) it never wraps or cuts a line, so ids and paths stay
  whole whatever ``COLUMNS`` says.
* ``guard_pipes()``: stdout/stderr that survive a closed pipe. After the reader is gone further
  output is dropped (as ``yes | head`` does) and the command ends normally, so it still cleans
  up what it started and exits with its own code instead of a ``BrokenPipeError`` traceback.
* ``count(n, "scene")``: "1 scene", "3 scenes".
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from rich.console import Console

__all__ = ["PipeGuard", "count", "guard_pipes", "screen"]

# Wide enough for any id, path or title on one line; rich never pads to it.
_UNBOUNDED = 100_000


def screen(file: TextIO | None = None) -> Console:
    """A Console for ``file`` (default stdout): terminal width on a terminal, no wrap elsewhere."""
    stream = file if file is not None else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    if tty:
        return Console(file=file, soft_wrap=True)
    return Console(file=file, soft_wrap=True, width=_UNBOUNDED)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: 1 scene, 0 scenes, 2 images."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


class PipeGuard:
    """A text stream wrapper that turns EPIPE (reader gone) into silence.

    The first ``BrokenPipeError`` points the stream's file descriptor at ``/dev/null`` and sets
    ``reader_gone``; every later write succeeds without output. Everything else is delegated to
    the wrapped stream.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # no file descriptor (a test's StringIO): nothing to do
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_pipes() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in ``PipeGuard`` (once)."""
    if not isinstance(sys.stdout, PipeGuard):
        sys.stdout = PipeGuard(sys.stdout)
    if not isinstance(sys.stderr, PipeGuard):
        sys.stderr = PipeGuard(sys.stderr)
