"""Structured log lines for every outside call: service, method, URL, status, duration, outcome.

Activities set the Temporal context (workflow id, attempt) once through ``call_context``; clients
call ``log_call`` after each request. Prompts never go here at INFO: callers pass sizes or hashes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Self

__all__ = ["CallTimer", "call_context", "current_call_context", "log_call"]

logger = logging.getLogger("storyloom.calls")

# Immutable default: call_context always sets a fresh dict, never mutates the current one.
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "storyloom_call_context", default=MappingProxyType({})
)


@contextlib.contextmanager
def call_context(**fields: Any) -> Iterator[None]:
    """Attach fields (workflow_id, attempt, activity) to every call logged inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_call_context() -> dict[str, Any]:
    return dict(_context.get())


def log_call(
    service: str,
    method: str,
    url: str,
    *,
    status: int | None,
    duration_s: float,
    outcome: str,
    level: int = logging.INFO,
    **extra: Any,
) -> None:
    """One line per outside call. ``outcome`` is "ok" or the error class name."""
    fields = {
        "service": service,
        "method": method,
        "url": url,
        "status": status,
        "duration_ms": round(duration_s * 1000, 1),
        "outcome": outcome,
        **_context.get(),
        **extra,
    }
    logger.log(
        level,
        "%s %s %s -> %s in %.1f ms (%s)",
        service, method, url, status, fields["duration_ms"], outcome,
        extra={"call": fields},
    )


@dataclass
class CallTimer:
    """Measures one call: ``with CallTimer("ollama", "POST", url) as t: ...; t.status = 200``.

    On exit it logs once, with the exception's class name as outcome when one escaped.
    """

    service: str
    method: str
    url: str
    status: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _start: float = 0.0

    def __enter__(self) -> Self:
        self._start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = "ok" if exc_type is None else exc_type.__name__
        log_call(
            self.service, self.method, self.url,
            status=self.status, duration_s=time.perf_counter() - self._start,
            outcome=outcome, level=logging.INFO if exc_type is None else logging.WARNING,
            **self.extra,
        )
