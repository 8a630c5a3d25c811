"""Follow one scene workflow live: stage, pending activity, tokens, queue position, sampler step.

The picture comes from ``handle.describe()`` (pending activities and their heartbeat details,
notes §5.8) and the workflow's ``progress`` query. It is drawn with rich on a terminal, as plain
lines (one per change) otherwise, and not at all in quiet (``--json``) mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TextIO

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from workflows_temporal.contracts import RenderProgress, SceneResult, WriteProgress

__all__ = ["Snapshot", "failure_message", "follow", "render_line", "snapshot"]

Mode = Literal["rich", "plain", "quiet"]
_RPC_TIMEOUT = timedelta(seconds=2)


@dataclass
class Snapshot:
    """What the user sees at one moment."""

    elapsed_s: float
    status: str = "RUNNING"
    stage: str | None = None
    activity: str | None = None
    activity_state: str | None = None
    attempt: int = 1
    last_failure: str | None = None
    tokens: int | None = None
    render: RenderProgress | None = None


# The server's stand-in for a failure over its size limit; the real one is its (trimmed) cause.
SIZE_LIMIT_MESSAGE = "Failure exceeds size limit."


def failure_message(failure: Any) -> str | None:
    """The message a user should read of a Temporal ``Failure``: the step's own error, also
    when the server wrapped it as "Failure exceeds size limit."."""
    while failure.message == SIZE_LIMIT_MESSAGE and failure.HasField("cause"):
        failure = failure.cause
    return failure.message or None


def _stage_of(progress: Any) -> str | None:
    if progress is None:
        return None
    if isinstance(progress, str):
        return progress
    if isinstance(progress, dict):
        value = progress.get("stage")
    else:
        value = getattr(progress, "stage", None)
    return None if value is None else str(value)


async def _decode_details(client: Client, pa: Any) -> Any:
    if not pa.HasField("heartbeat_details") or not pa.heartbeat_details.payloads:
        return None
    values = await client.data_converter.decode(pa.heartbeat_details.payloads)
    return values[0] if values else None


async def snapshot(client: Client, handle: WorkflowHandle[Any, Any], started: float) -> Snapshot:
    """One look at the workflow; never raises for a missing query or an undecodable heartbeat."""
    desc = await handle.describe()
    snap = Snapshot(elapsed_s=time.monotonic() - started, status=desc.status.name if desc.status
                    else "RUNNING")
    with contextlib.suppress(Exception):  # no worker yet, or the workflow already closed
        snap.stage = _stage_of(await handle.query("progress", rpc_timeout=_RPC_TIMEOUT))
    for pa in desc.raw_description.pending_activities:
        snap.activity = pa.activity_type.name
        snap.activity_state = PendingActivityState.Name(pa.state).removeprefix(
            "PENDING_ACTIVITY_STATE_"
        ).lower()
        snap.attempt = pa.attempt
        if pa.HasField("last_failure"):
            snap.last_failure = failure_message(pa.last_failure)
        details = await _decode_details(client, pa)
        if isinstance(details, dict):
            with contextlib.suppress(ValueError):
                if "prompt_id" in details:
                    snap.render = RenderProgress.model_validate(details)
                elif "tokens" in details:
                    snap.tokens = WriteProgress.model_validate(details).tokens
    return snap


def render_line(snap: Snapshot) -> str:
    """The one-line description of a snapshot (used by both displays)."""
    parts = [f"{snap.elapsed_s:5.1f}s"]
    if snap.stage:
        parts.append(snap.stage)
    if snap.activity:
        what = f"{snap.activity} ({snap.activity_state})"
        if snap.attempt > 1:
            what += f" attempt {snap.attempt}"
        parts.append(what)
    if snap.tokens is not None:
        parts.append(f"{snap.tokens} tokens")
    if snap.render is not None:
        r = snap.render
        if r.queue_position is not None:
            parts.append(f"queue position {r.queue_position}")
        if r.steps:
            parts.append(f"step {r.step}/{r.steps}")
        if r.node:
            parts.append(f"node {r.node}")
        parts.append(r.state)
    if snap.last_failure:
        parts.append(f"last failure: {snap.last_failure}")
    return " · ".join(parts)


def _one_row(line: str) -> str:
    """``line`` without its line breaks (a failure's message may hold several)."""
    return re.sub(r"\s*\n\s*", " ", line)


async def show_progress(
    handle: WorkflowHandle[Any, Any],
    next_line: Callable[[float], Awaitable[str | None]],
    *,
    mode: Mode,
    interval: float = 0.5,
    out: TextIO | None = None,
    console: Any = None,
) -> Any:
    """Draw ``next_line(started)`` until the workflow closes; return its raw result or raise its
    failure (``WorkflowFailureError``), as ``handle.result()`` does. Rich mode redraws one live
    line (never wider than the terminal: cut with "…"); plain mode prints a line when what it
    says changes; quiet mode draws nothing."""
    out = out or sys.stderr
    started = time.monotonic()
    result_task = asyncio.create_task(handle.result())
    if mode == "quiet":
        return await result_task
    live: Any = None
    if mode == "rich":
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        live = Live(Text("starting…"), console=console or Console(file=out), transient=True,
                    refresh_per_second=8)
        live.start()
    last = ""
    try:
        while not result_task.done():
            with contextlib.suppress(Exception):
                line = await next_line(started)
                if line and live is not None:  # one row, cut at the terminal's width: the
                    # whole cause stays in `storyloom watch` (plain lines) and the logs
                    live.update(Text(_one_row(line), no_wrap=True, overflow="ellipsis"))
                elif line and line.split(" · ", 1)[-1] != last.split(" · ", 1)[-1]:
                    print(line, file=out, flush=True)
                last = line or last
            await asyncio.wait([result_task], timeout=interval)
    finally:
        if live is not None:
            live.stop()
        if not result_task.done():
            result_task.cancel()
    return result_task.result()


async def follow(
    client: Client,
    handle: WorkflowHandle[Any, Any],
    *,
    mode: Mode,
    interval: float = 0.5,
    out: TextIO | None = None,
    console: Any = None,
) -> SceneResult:
    """Show a scene's progress until it closes; its SceneResult, or its failure raised.
    ``console``: the rich Console of rich mode (default: one on ``out``)."""

    async def line(started: float) -> str:
        return render_line(await snapshot(client, handle, started))

    return SceneResult.model_validate(await show_progress(
        handle, line, mode=mode, interval=interval, out=out, console=console))
