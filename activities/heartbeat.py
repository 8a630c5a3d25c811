"""Heartbeats on a timer for an activity's whole life, whatever it is waiting on.

An activity with a ``heartbeat_timeout`` is declared dead when no heartbeat arrives in time,
and its retry starts the work again. A slow model is silent for 10-20 s before its first byte
and a non-streamed call is silent until the whole answer is written, so heartbeats tied to
progress (one per token) are not enough: this module beats on a timer from the first line of
the activity to its last, and re-sends the latest progress details each time, so a progress
display fed by ``describe()`` never goes blank. Cancellation reaches an activity only through a
heartbeat response, so the timer also keeps cancels fast.

Use ``@auto_heartbeat()`` on an activity (function or method), or ``async with heartbeating()``
around its body; inside, ``report(details)`` records progress and heartbeats it at once.
Outside an activity (plain unit tests) all of this does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar

from temporalio import activity

__all__ = ["auto_heartbeat", "beat_interval", "heartbeating", "report"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_EVERY_S = 2.0  # without a heartbeat_timeout: still fast enough for a cancel to arrive
_MIN_EVERY_S = 0.01


class _Beat:
    """The details the timer re-sends: the last ones reported."""

    def __init__(self, details: tuple[Any, ...]) -> None:
        self.details = details

    def send(self) -> None:
        activity.heartbeat(*self.details)


_current: ContextVar[_Beat | None] = ContextVar("storyloom_heartbeat", default=None)


def beat_interval() -> float:
    """Seconds between timer beats: a quarter of the activity's heartbeat timeout (so three
    beats can be lost before it fires), at most ``DEFAULT_EVERY_S``."""
    timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
    if not timeout:
        return DEFAULT_EVERY_S
    return max(_MIN_EVERY_S, min(DEFAULT_EVERY_S, timeout.total_seconds() / 4))


def report(*details: Any) -> None:
    """Record progress details and heartbeat them now; the timer re-sends them until the next
    report. A no-op outside an activity."""
    if not activity.in_activity():
        return
    beat = _current.get()
    if beat is not None:
        beat.details = details
    activity.heartbeat(*details)


@contextlib.asynccontextmanager
async def heartbeating(every_s: float | None = None, *details: Any) -> AsyncIterator[None]:
    """Heartbeat every ``every_s`` seconds (default ``beat_interval()``) while the block runs,
    starting at once with ``details``. Nested blocks share the outer timer. Outside an activity
    it only runs the block."""
    if not activity.in_activity():
        yield
        return
    outer = _current.get()
    if outer is not None:  # one timer per activity: an inner block only updates the details
        if details:
            report(*details)
        yield
        return
    beat = _Beat(details)
    interval = max(_MIN_EVERY_S, every_s if every_s is not None else beat_interval())

    async def tick() -> None:
        while True:
            beat.send()
            await asyncio.sleep(interval)

    token = _current.set(beat)
    task = asyncio.create_task(tick(), name="heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        _current.reset(token)


def auto_heartbeat(
    every_s: float | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async activity so it heartbeats on a timer for its whole life."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            async with heartbeating(every_s):
                return await fn(*args, **kwargs)

        return run

    return wrap
