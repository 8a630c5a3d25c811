"""HTTP routes for submitting and steering prompts: /prompt, /queue, /history, /interrupt, /free."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from emulators.comfyui.core import CORE
from emulators.comfyui.ledger import now_ms
from emulators.comfyui.validation import envelope, validate_prompt
from emulators.comfyui.vram import request_free

__all__ = ["empty_ok", "is_canonical_uuid", "queue_routes", "server_error"]


def server_error() -> web.Response:
    """What aiohttp answers for an unhandled exception (the real server's 500)."""
    return web.Response(
        status=500,
        text="500 Internal Server Error\n\nServer got itself in trouble",
        content_type="text/plain",
    )


def empty_ok() -> web.Response:
    return web.Response(status=200)


def is_canonical_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _bad_request(error: dict[str, Any], node_errors: dict[str, Any] | None = None) -> web.Response:
    return web.json_response({"error": error, "node_errors": node_errors or {}}, status=400)


async def post_prompt(request: web.Request) -> web.Response:
    core = request.app[CORE]
    core.stats["prompts_posted"] += 1
    try:
        body = await request.json()
    except ValueError:
        return server_error()
    is_obj = isinstance(body, dict)
    try:
        number = core.ledger.allocate_number(
            body.get("number") if is_obj else None, bool(body.get("front")) if is_obj else False
        )
    except (TypeError, ValueError):
        return server_error()
    if not is_obj or "prompt" not in body:
        return _bad_request(envelope("no_prompt", "No prompt provided", "No prompt provided"))
    prompt_id = body.get("prompt_id")
    if prompt_id is None:
        prompt_id = str(uuid.uuid4())
    elif not is_canonical_uuid(prompt_id):
        return _bad_request(
            envelope(
                "invalid_prompt_id",
                "prompt_id must be a valid UUID",
                "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                "omit it to let the server generate one",
            )
        )
    prompt = body["prompt"]
    extra = body.get("extra_data") or {}
    if not isinstance(prompt, dict) or not isinstance(extra, dict):
        return server_error()
    try:
        verdict = validate_prompt(prompt, core.node_info(), core.root / "input")
    except Exception:  # noqa: BLE001 - malformed graphs crash the real server the same way
        return server_error()
    if verdict.error is not None:
        return _bad_request(verdict.error, verdict.node_errors)
    extra = dict(extra)
    if "client_id" in body:
        extra["client_id"] = body["client_id"]
    extra["create_time"] = now_ms()
    core.ledger.put(number, prompt_id, prompt, extra, verdict.outputs)
    core.stats["submitted"] += 1
    core.wake.set()
    await core.broadcast_status()
    return web.json_response(
        {"prompt_id": prompt_id, "number": number, "node_errors": verdict.node_errors}
    )


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": request.app[CORE].ledger.remaining}})


async def get_queue(request: web.Request) -> web.Response:
    ledger = request.app[CORE].ledger
    running = [ledger.running.entry()] if ledger.running is not None else []
    return web.json_response(
        {"queue_running": running, "queue_pending": [i.entry() for i in ledger.pending]}
    )


async def post_queue(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        body = await request.json()
    except ValueError:
        return server_error()
    changed = False
    if isinstance(body, dict):
        if body.get("clear"):
            changed = bool(core.ledger.pending)
            core.ledger.pending = []
        if isinstance(body.get("delete"), list):
            changed = core.ledger.delete_pending({str(p) for p in body["delete"]}) or changed
    if changed:
        await core.broadcast_status()
    return empty_ok()


async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    try:
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query.get("offset", "-1"))
    except ValueError:
        return server_error()
    return web.json_response(request.app[CORE].ledger.history_slice(max_items, offset))


async def get_history_one(request: web.Request) -> web.Response:
    pid = request.match_info["prompt_id"]
    result = request.app[CORE].ledger.history.get(pid)
    return web.json_response({pid: result.history_entry()} if result is not None else {})


async def post_history(request: web.Request) -> web.Response:
    ledger = request.app[CORE].ledger
    try:
        body = await request.json()
    except ValueError:
        return server_error()
    if isinstance(body, dict):
        if body.get("clear"):
            ledger.history.clear()
        if isinstance(body.get("delete"), list):
            for pid in body["delete"]:
                ledger.history.pop(str(pid), None)
    return empty_ok()


async def post_interrupt(request: web.Request) -> web.Response:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        body = {}
    pid = body.get("prompt_id") if isinstance(body, dict) else None
    request.app[CORE].interrupt(str(pid) if pid else None)
    return empty_ok()


async def post_free(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return server_error()
    request_free(request.app[CORE], body)
    return empty_ok()


def queue_routes() -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/prompt", post_prompt),
        ("GET", "/prompt", get_prompt),
        ("GET", "/queue", get_queue),
        ("POST", "/queue", post_queue),
        ("GET", "/history", get_history),
        ("GET", "/history/{prompt_id}", get_history_one),
        ("POST", "/history", post_history),
        ("POST", "/interrupt", post_interrupt),
        ("POST", "/free", post_free),
    ]
