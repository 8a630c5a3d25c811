"""WebSocket connections by client id: targeted sends, broadcasts and abrupt (1006) drops."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

__all__ = ["Hub"]

logger = logging.getLogger(__name__)


class Hub:
    """Sockets keyed by client id; a new socket with a used id replaces the old one.

    As in ComfyUI 0.33.0 (server.py ``websocket_handler``: ``sockets[sid] = ws`` on connect,
    ``sockets.pop(sid)`` in its ``finally``), a socket that closes unregisters its client id even
    when a newer socket took that id over: the newer one then receives nothing at all, not even
    status broadcasts, although its prompts still run (observed on a real 0.33.0 server).
    """

    def __init__(self) -> None:
        self.sockets: dict[str, tuple[web.WebSocketResponse, web.Request]] = {}

    def add(self, sid: str, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.sockets[sid] = (ws, request)

    def remove(self, sid: str) -> None:
        """A socket of client ``sid`` closed: forget the id, whichever socket holds it now."""
        self.sockets.pop(sid, None)

    async def send(self, kind: str, data: dict[str, Any], sid: str | None = None) -> None:
        """To client `sid`, or to every socket when `sid` is None."""
        text = json.dumps({"type": kind, "data": data})
        if sid is None:
            targets = [entry[0] for entry in list(self.sockets.values())]
        else:
            entry = self.sockets.get(sid)
            targets = [entry[0]] if entry is not None else []
        for ws in targets:
            if ws.closed:
                continue
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("ws send failed: %s", exc)

    def drop_all(self) -> int:
        """Abort every socket's TCP connection without a close frame (the peer sees 1006)."""
        count = 0
        for sid, (_ws, request) in list(self.sockets.items()):
            transport = request.transport
            if transport is not None:
                transport.abort()
                count += 1
            self.sockets.pop(sid, None)
        return count
