"""Following one prompt over ComfyUI's WebSocket, with HTTP as the judge of its fate.

The socket only brings progress (§10.1): HTTP is read every ``poll_interval`` whatever the
socket says, and at once after a terminal frame or a reconnect; only a COMPLETED reading ends
the follow. Frames are filtered by ``prompt_id``; binary frames and unknown types are skipped;
there is no replay after a drop, so a reconnect is always followed by an HTTP read.

A socket that hears nothing at all for ``ws_silence`` seconds while HTTP says the job runs is
closed and opened again: real ComfyUI 0.33.0 unregisters a clientId when *any* socket of that id
closes, so a stale attempt's socket closing after ours opened silences ours for good (observed;
the emulator does the same). The silence that earns such a reconnect doubles (up to
``ws_retry_max``) until a frame about our prompt arrives, so a long node without progress costs
a few reconnects, never a loop.
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
from activities.errors import ComfyExecutionError, ComfyOutOfMemory, JobCancelled, JobLost

if TYPE_CHECKING:
    from activities.comfyui.client import ComfyClient

__all__ = ["Watcher", "judge"]

logger = logging.getLogger(__name__)
_OOM_HINT = (
    "Another model is likely resident on that GPU: check that one physical GPU is not "
    "registered under two GPU names (--gpu) and that an Ollama on that card is under the "
    "scheduler (STORYLOOM_GPU_SHARING=shared), or lower STORYLOOM_IMAGE_WIDTH/HEIGHT; "
    "the render is retried")
_TERMINAL = {"execution_success", "execution_error", "execution_interrupted"}
_MAX_FRAME = 32 * 1024 * 1024  # binary previews can be large; we skip them but must read them
# The Watcher whose socket holds each clientId (by socket URL) in this process: a newer one
# closes it, and waits, before opening its own (two of our sockets on one id silence each other).
_HOLDERS: dict[str, Watcher] = {}


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
        exception_type = str(err.get("exception_type", "?"))
        exception_message = str(err.get("exception_message", ""))
        if ComfyOutOfMemory.is_out_of_memory(exception_type, exception_message):
            raise ComfyOutOfMemory(
                node_id=str(err.get("node_id", "?")), node_type=str(err.get("node_type", "?")),
                exception_type=exception_type, exception_message=exception_message,
                service=SERVICE, where=f"{where} node {err.get('node_id', '?')}",
                hint=_OOM_HINT,
            )
        raise ComfyExecutionError(
            node_id=str(err.get("node_id", "?")), node_type=str(err.get("node_type", "?")),
            exception_type=exception_type, exception_message=exception_message,
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
    """An open WebSocket with one clientId (the client's, or ``client_id``). Open it before
    submitting, and submit with the same ``client_id``: ComfyUI sends a prompt's execution
    frames only to the socket whose clientId the prompt names (§4.4), and a new socket with that
    clientId takes them over (§4.1), so a later attempt that re-attaches with the same id sees
    the progress too.

    ``follow`` yields ProgressEvents until HTTP confirms completion (kind "done"); raises
    ComfyExecutionError (final; ComfyOutOfMemory retryable), JobCancelled (final), JobLost (retryable) and the client's
    transport errors (retryable). HTTP is polled every ``poll_interval``, so the end is seen in
    time even without a usable socket; a socket that fails or drops is tried again with
    exponential back-off (at once, then ``ws_retry_initial`` doubling to ``ws_retry_max``), and a
    socket silent for ``ws_silence`` while the job runs is reopened (module docstring), never in
    a tight loop. A socket is always closed, and the close waited for, before the next one with
    the same clientId opens, also another Watcher's in this process (a stale attempt's): that
    one then follows over HTTP only. ``connects`` counts the attempts to open one.
    """

    def __init__(self, client: ComfyClient, client_id: str | None = None) -> None:
        self._client = client
        self._ws: ClientConnection | None = None
        self.client_id = client_id or client.client_id
        base = client.base_url
        scheme = "wss" if base.startswith("https") else "ws"
        self.url = f"{scheme}://{base.split('://', 1)[1]}/ws?clientId={self.client_id}"
        self.connects = 0
        self._backoff = 0.0
        self._retry_at = 0.0  # loop time before which no new connect is tried
        self._opened_at = 0.0
        self._heard = 0.0  # loop time of the socket's last frame (or of its connect)
        self._last_poll = float("-inf")
        self._superseded = False  # a newer Watcher took our clientId: no more sockets
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        # A socket that cannot open (a proxy without upgrades) degrades to HTTP polling;
        # a server that is down shows up as ServiceUnavailable at the first HTTP call.
        await self._connect()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        """Close our socket and wait until the connection is gone. ComfyUI unregisters a
        clientId when any socket of that id closes (§4.1): a new socket with our id must only
        open after the old one is closed, or the old one's late close would silence it."""
        ws, self._ws = self._ws, None
        if _HOLDERS.get(self.url) is self:
            del _HOLDERS[self.url]
        if ws is not None:
            await ws.close()
            await ws.wait_closed()

    async def _hand_over(self) -> None:
        """A newer Watcher in this process takes our clientId: close for good, follow by HTTP."""
        self._superseded = True
        logger.info("comfyui websocket %s: a newer follower takes this clientId over; the "
                    "older one follows over HTTP only", self.url)
        await self._close()

    @property
    def _next_connect(self) -> float:
        """Loop time of the next connect try (never, once superseded)."""
        return float("inf") if self._superseded else self._retry_at

    def _back_off(self, lived: float) -> None:
        """After a failed connect or a drop: the first try is at once, then after
        ``ws_retry_initial`` doubling up to ``ws_retry_max``; a socket that had served that
        long starts the series over."""
        timeouts = self._client.timeouts
        if lived >= timeouts.ws_retry_max:
            self._backoff = 0.0
        delay = self._backoff
        self._backoff = min(timeouts.ws_retry_max,
                            max(timeouts.ws_retry_initial, self._backoff * 2))
        self._retry_at = asyncio.get_running_loop().time() + delay

    async def _connect(self) -> bool:
        await self._close()  # never two of our sockets on one clientId (see _close)
        if self._superseded:
            return False
        loop = asyncio.get_running_loop()
        holder = _HOLDERS.get(self.url)
        if holder is not None and holder is not self and holder._loop is loop:
            await holder._hand_over()
        self.connects += 1
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
            self._ws = None
            self._back_off(0.0)
            logger.warning("comfyui websocket %s: connect failed (%s); next try in %.1f s",
                           self.url, exc, self._retry_at - asyncio.get_running_loop().time())
            return False
        self._opened_at = self._heard = loop.time()
        self._loop = loop
        _HOLDERS[self.url] = self
        return True

    def _dropped(self, exc: ConnectionClosed) -> None:
        self._ws = None  # recv raised ConnectionClosed: the connection is already closed
        if self._superseded:  # closed by the newer Watcher on purpose: HTTP only from now on
            return
        self._back_off(asyncio.get_running_loop().time() - self._opened_at)
        logger.warning("comfyui websocket dropped (%s); polling HTTP, reconnecting in %.1f s",
                       exc, self._retry_at - asyncio.get_running_loop().time())

    async def _judge(self, prompt_id: str) -> ProgressEvent:
        self._last_poll = asyncio.get_running_loop().time()
        return judge(await self._client.job_status(prompt_id), prompt_id, self._client.base_url)

    async def follow(self, prompt_id: str) -> AsyncIterator[ProgressEvent]:
        """Progress of an accepted prompt until HTTP says COMPLETED (see class docstring)."""
        timeouts = self._client.timeouts
        loop = asyncio.get_running_loop()
        event = await self._judge(prompt_id)
        yield event
        if event.kind == "done":
            return
        running = event.kind == "started"
        quiet = timeouts.ws_silence  # the silence that earns a reconnect; doubles while useless
        next_poll = loop.time() + timeouts.poll_interval
        while True:
            if self._ws is None and loop.time() >= self._next_connect and await self._connect():
                yield ProgressEvent("reconnected", prompt_id)
                # No replay after a gap: read HTTP now (or at the poll pace, if just read).
                next_poll = max(loop.time(), self._last_poll + timeouts.poll_interval)
            elif self._ws is not None and running and loop.time() - self._heard >= quiet:
                # Nothing at all (not even a status broadcast) while the job runs: the server
                # may have unregistered our clientId (a stale socket with the same id closed
                # after ours opened, §4.1). Only a new connect registers it again.
                logger.info("comfyui websocket %s: silent for %.1f s while prompt %s runs; "
                            "reconnecting", self.url, loop.time() - self._heard, prompt_id)
                quiet = min(max(timeouts.ws_silence, timeouts.ws_retry_max), quiet * 2)
                await self._close()
                if await self._connect():
                    yield ProgressEvent("reconnected", prompt_id)
                next_poll = max(loop.time(), self._last_poll + timeouts.poll_interval)
            wait = next_poll - loop.time()
            frame: str | bytes | None = None
            if wait > 0:
                if self._ws is None:  # sleep until the next poll or the next connect try
                    await asyncio.sleep(max(0.0, min(wait, self._next_connect - loop.time())))
                    continue
                if running:  # wake up when the silence gets suspicious
                    wait = min(wait, max(0.0, self._heard + quiet - loop.time()))
                try:
                    frame = await asyncio.wait_for(self._ws.recv(), wait)
                except TimeoutError:
                    continue
                except ConnectionClosed as exc:
                    self._dropped(exc)
                    next_poll = max(loop.time(), self._last_poll + timeouts.poll_interval)
                    continue
            if frame is None:
                # HTTP is the truth, read on a timer whatever the socket says (a silent socket
                # proves nothing): completion is seen within ``poll_interval``.
                event = await self._judge(prompt_id)
                yield event
                if event.kind == "done":
                    return
                running = event.kind == "started"
                next_poll = loop.time() + timeouts.poll_interval
                continue
            self._heard = loop.time()
            message = _ours(frame, prompt_id)
            if message is None:
                continue
            quiet = timeouts.ws_silence  # this socket works: silence is the job's own again
            kind, data = message
            if kind in _TERMINAL or (kind == "executing" and data.get("node") is None):
                next_poll = loop.time()  # the end was announced: HTTP confirms it now
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
