"""Following one prompt over ComfyUI's WebSocket, with HTTP as the judge of its fate.

The socket only brings progress (§10.1): every terminal frame, every reconnect and every quiet
spell of ``ws_silence`` seconds leads to ``job_status`` over HTTP, and only a COMPLETED reading
ends the follow. Frames are filtered by ``prompt_id``; binary frames and unknown types are
skipped; there is no replay after a drop, so a reconnect is always followed by an HTTP read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from activities.comfyui.models import JobState, JobStatus, ProgressEvent
from activities.comfyui.transport import SERVICE
from activities.errors import ComfyExecutionError, JobCancelled, JobLost

if TYPE_CHECKING:
    from activities.comfyui.client import ComfyClient

__all__ = ["Watcher", "judge"]

logger = logging.getLogger(__name__)
_TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}
_MAX_FRAME = 32 * 1024 * 1024  # binary previews can be large; we skip them but must read them


def judge(status: JobStatus, prompt_id: str, where: str) -> ProgressEvent:
    """The event an HTTP reading means, or the error it proves (failed/cancelled/lost)."""
    if status.state is JobState.COMPLETED:
        return ProgressEvent("done", prompt_id)
    if status.state is JobState.PENDING:
        return ProgressEvent("queued", prompt_id, queue_position=status.queue_position)
    if status.state is JobState.RUNNING:
        return ProgressEvent("started", prompt_id)
    if status.state is JobState.FAILED:
        err = status.error or {}
        raise ComfyExecutionError(
            node_id=str(err.get("node_id", "?")), node_type=str(err.get("node_type", "?")),
            exception_type=str(err.get("exception_type", "?")),
            exception_message=str(err.get("exception_message", "")),
            service=SERVICE, where=f"{where} node {err.get('node_id', '?')}",
            hint="The same graph and inputs fail the same way; fix the input or the template",
        )
    if status.state is JobState.CANCELLED:
        raise JobCancelled(
            "the prompt was interrupted", service=SERVICE, where=f"{where} prompt {prompt_id}",
            hint="Someone cancelled it in ComfyUI or storyloom; render again to retry",
        )
    raise JobLost(
        "ComfyUI no longer knows this accepted prompt (restarted or removed from the queue)",
        service=SERVICE, where=f"{where} prompt {prompt_id}",
        hint="It will be submitted again",
    )


class Watcher:
    """An open WebSocket of one ComfyClient (its ``client_id``). Open it before submitting.

    ``follow`` yields ProgressEvents until HTTP confirms completion (kind "done"); raises
    ComfyExecutionError (final), JobCancelled (final), JobLost (retryable) and the client's
    transport errors (retryable). Without a socket it still works, by polling HTTP.
    """

    def __init__(self, client: ComfyClient) -> None:
        self._client = client
        self._ws: ClientConnection | None = None
        base = client.base_url
        scheme = "wss" if base.startswith("https") else "ws"
        self.url = f"{scheme}://{base.split('://', 1)[1]}/ws?clientId={client.client_id}"

    async def __aenter__(self) -> Self:
        # A socket that cannot open (a proxy without upgrades) degrades to HTTP polling;
        # a server that is down shows up as ServiceUnavailable at the first HTTP call.
        await self._connect()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None

    async def _connect(self) -> bool:
        try:
            self._ws = await connect(
                self.url, open_timeout=self._client.timeouts.connect, max_size=_MAX_FRAME,
                close_timeout=1.0,
                # No read back-pressure: frames left unread when a follow ends (more than the
                # default 16) would pause reading, and close() would then wait the whole
                # close_timeout for a close frame stuck behind them (+1 s per render, bench).
                max_queue=None,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            logger.warning("comfyui websocket %s: connect failed (%s)", self.url, exc)
            self._ws = None
            return False
        return True

    async def follow(self, prompt_id: str) -> AsyncIterator[ProgressEvent]:
        """Progress of an accepted prompt until HTTP says COMPLETED (see class docstring)."""
        timeouts = self._client.timeouts
        loop = asyncio.get_running_loop()
        where = self._client.base_url
        event = judge(await self._client.job_status(prompt_id), prompt_id, where)
        yield event
        if event.kind == "done":
            return
        announced = False  # a terminal frame arrived: poll HTTP briskly until it agrees
        next_poll = loop.time() + timeouts.ws_silence
        while True:
            if self._ws is None and await self._connect():
                yield ProgressEvent("reconnected", prompt_id)
                next_poll = loop.time()
            wait = next_poll - loop.time()
            frame: str | bytes | None = None
            if wait > 0:
                if self._ws is None:
                    await asyncio.sleep(wait)
                else:
                    try:
                        frame = await asyncio.wait_for(self._ws.recv(), wait)
                    except TimeoutError:
                        frame = None
                    except ConnectionClosed as exc:
                        logger.warning("comfyui websocket dropped (%s); asking HTTP", exc)
                        self._ws = None
                        next_poll = loop.time()
                        continue
            if frame is None:
                event = judge(await self._client.job_status(prompt_id), prompt_id, where)
                yield event
                if event.kind == "done":
                    return
                brisk = announced or self._ws is None
                next_poll = loop.time() + (timeouts.poll_interval if brisk else timeouts.ws_silence)
                continue
            message = _ours(frame, prompt_id)
            if message is None:
                continue
            kind, data = message
            next_poll = loop.time() + timeouts.ws_silence
            if kind in _TERMINAL or (kind == "executing" and data.get("node") is None):
                announced = True
                next_poll = loop.time()
            elif kind == "execution_start":
                yield ProgressEvent("started", prompt_id)
            elif kind == "executing":
                yield ProgressEvent("node", prompt_id, node=str(data["node"]))
            elif kind == "progress":
                yield ProgressEvent(
                    "step", prompt_id, node=_str_or_none(data.get("node")),
                    value=int(data.get("value", 0)), max=int(data.get("max", 0)),
                )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _ours(frame: str | bytes, prompt_id: str) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a JSON frame about ``prompt_id``; None for binary, foreign or odd frames."""
    if isinstance(frame, bytes):
        return None
    try:
        message = json.loads(frame)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        return None
    data: dict[str, Any] = message["data"]
    if data.get("prompt_id") != prompt_id:
        return None
    return str(message.get("type")), data
