"""File routes (§6): GET /view (download, no path escape) and POST /upload/image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators.comfyui.core import CORE
from emulators.comfyui.routes_queue import server_error

__all__ = ["file_routes"]

_KINDS = ("output", "input", "temp")


async def view(request: web.Request) -> web.StreamResponse:
    query = request.rel_url.query
    if "filename" not in query:
        return web.Response(status=404)
    filename = query["filename"]
    if not filename or filename.startswith("/") or ".." in filename:
        return web.Response(status=400)
    filename = os.path.basename(filename)  # like the server: "a/b.png" means b.png
    kind = query.get("type", "output")
    if kind not in _KINDS:
        return web.Response(status=400)
    base = os.path.abspath(request.app[CORE].root / kind)
    folder = os.path.abspath(os.path.join(base, query.get("subfolder", "")))
    if os.path.commonpath((folder, base)) != base:
        return web.Response(status=403)
    path = os.path.join(folder, filename)
    if not os.path.isfile(path):
        return web.Response(status=404)
    headers = {"Content-Disposition": f'filename="{filename}"', "X-Content-Type-Options": "nosniff"}
    return web.FileResponse(path, headers=headers)


async def upload_image(request: web.Request) -> web.Response:
    try:
        post = await request.post()
    except ValueError:
        return web.Response(status=400)
    image = post.get("image")
    if not isinstance(image, web.FileField) or not image.filename:
        return web.Response(status=400)
    kind = str(post.get("type") or "input")
    if kind not in _KINDS:
        return server_error()  # the real server crashes on an unknown type
    base = os.path.abspath(request.app[CORE].root / kind)
    subfolder = str(post.get("subfolder", ""))
    folder = os.path.join(base, os.path.normpath(subfolder))
    filename = image.filename
    target = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((base, target)) != base:
        return web.Response(status=400)
    os.makedirs(folder, exist_ok=True)
    data = image.file.read()
    duplicate = False
    if str(post.get("overwrite", "")) not in ("true", "1"):
        stem, ext = os.path.splitext(filename)
        i = 1
        while os.path.exists(target):
            if Path(target).read_bytes() == data:
                duplicate = True
                break
            filename = f"{stem} ({i}){ext}"
            target = os.path.join(folder, filename)
            i += 1
    if not duplicate:
        Path(target).write_bytes(data)
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})


def file_routes() -> list[tuple[str, str, Any]]:
    return [("GET", "/view", view), ("POST", "/upload/image", upload_image)]
