"""The ``legacy`` fault: answer like a ComfyUI from before 0.33 (protocol §12, *older versions*).

As an aiohttp middleware over the 0.33 routes: ``/api/jobs*`` does not exist (404, as on 0.3.x
servers); a ``/prompt`` 400 carries ``error`` as a plain string (its message) and an empty
``node_errors`` as a list; ``/history`` entries have only ``prompt`` and ``outputs`` (no
``status``, no ``meta``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulators.comfyui.core import CORE

__all__ = ["legacy_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _strip_history(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    return {pid: {k: v for k, v in entry.items() if k in ("prompt", "outputs")}
            for pid, entry in body.items() if isinstance(entry, dict)}


def _old_refusal(body: Any) -> Any:
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return body
    node_errors = body.get("node_errors") or []
    return {"error": str(body["error"].get("message", "")), "node_errors": node_errors}


@web.middleware
async def legacy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rewrite 0.33 answers into an older server's when the ``legacy`` fault is on."""
    if not request.app[CORE].faults.legacy:
        return await handler(request)
    path = request.path.removeprefix("/api") if not request.path.startswith("/api/jobs") \
        else request.path
    if path.startswith("/api/jobs"):
        return web.Response(status=404, text="404: Not Found", content_type="text/plain")
    response = await handler(request)
    if not isinstance(response, web.Response) or response.content_type != "application/json":
        return response
    if path == "/prompt" and request.method == "POST" and response.status == 400:
        rewrite = _old_refusal
    elif path.startswith("/history") and request.method == "GET":
        rewrite = _strip_history
    else:
        return response
    assert response.text is not None
    return web.json_response(rewrite(json.loads(response.text)), status=response.status)
