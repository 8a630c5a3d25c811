"""Informational routes, the WebSocket, and the emulator's own /_emulator control routes."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from emulators.comfyui.core import CORE
from emulators.comfyui.faults import FaultError, parse_faults

__all__ = ["control_routes", "misc_routes"]

VERSION = "0.33.0"
_GIB = 1024**3


async def index(request: web.Request) -> web.Response:
    return web.Response(
        text="<!doctype html><title>ComfyUI (storyloom emulator)</title>", content_type="text/html"
    )


async def object_info_all(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE].node_info())


async def object_info_one(request: web.Request) -> web.Response:
    name = request.match_info["node_class"]
    info = request.app[CORE].node_info()
    return web.json_response({name: info[name]} if name in info else {})


async def system_stats(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "system": {
                "os": sys.platform,
                "ram_total": 16 * _GIB,
                "ram_free": 12 * _GIB,
                "comfyui_version": VERSION,
                "required_frontend_version": "1.49.6",
                "installed_templates_version": "0.1.0",
                "required_templates_version": "0.1.0",
                "comfy_package_versions": [
                    {
                        "name": "comfyui-frontend-package",
                        "installed": "1.49.6",
                        "required": "1.49.6",
                    }
                ],
                "python_version": sys.version,
                "pytorch_version": "emulated",
                "embedded_python": False,
                "deploy_environment": "local",
                "argv": ["main.py", "--cpu", "--emulated"],
            },
            "devices": [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    "vram_total": 16 * _GIB,
                    "vram_free": 12 * _GIB,
                    "torch_vram_total": 16 * _GIB,
                    "torch_vram_free": 12 * _GIB,
                }
            ],
        }
    )


async def features(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "supports_preview_metadata": True,
            "supports_model_type_tags": True,
            "max_upload_size": 104857600,
            "extension": {"manager": {"supports_v4": True}},
            "node_replacements": True,
            "assets": False,
        }
    )


async def websocket(request: web.Request) -> web.WebSocketResponse:
    core = request.app[CORE]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    core.stats["ws_connects"] += 1
    if core.faults.ws_drop_on_connect and request.transport is not None:
        core.stats["ws_drops"] += 1
        request.transport.abort()  # the peer sees 1006, no close frame
        return ws
    sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
    core.hub.add(sid, ws, request)
    try:
        await ws.send_str(
            json.dumps({"type": "status", "data": {**core.status_data(), "sid": sid}})
        )
        running = core.ledger.running
        if running is not None and running.client_id == sid and core.current_node is not None:
            await ws.send_str(
                json.dumps({"type": "executing", "data": {"node": core.current_node}})
            )
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        core.hub.remove(sid)  # even if a newer socket took `sid` over, as ComfyUI does
    return ws


async def get_faults(request: web.Request) -> web.Response:
    faults = request.app[CORE].faults
    return web.json_response(dict(vars(faults)))


async def post_faults(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        body: Any = await request.json()
        # Merged over the start-up settings (--checkpoint-load-delay): a POST never resets them.
        faults, restart = parse_faults({**core.base_faults, **body} if isinstance(body, dict)
                                       else body)
    except (ValueError, FaultError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    core.faults = faults
    if restart:
        core.restart()
    return web.json_response({"faults": dict(vars(faults)), "restarted": restart})


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE].stats_snapshot())


def misc_routes() -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/object_info", object_info_all),
        ("GET", "/object_info/{node_class}", object_info_one),
        ("GET", "/system_stats", system_stats),
        ("GET", "/features", features),
        ("GET", "/ws", websocket),
    ]


def control_routes() -> list[tuple[str, str, Any]]:
    """Emulator-only routes (never under /api)."""
    return [
        ("GET", "/", index),
        ("GET", "/_emulator/faults", get_faults),
        ("POST", "/_emulator/faults", post_faults),
        ("GET", "/_emulator/stats", get_stats),
    ]
