"""Moving images to and from ComfyUI: ``/view`` downloads and ``/upload/image`` uploads.

Server-supplied names never become local paths (§10.10): a download is streamed to a temp file
inside ``dest_dir``, hashed on the way, and renamed to ``<stem>-<sha256[:12]><ext>``, where the
stem is ours and the extension comes from an allow-list.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import tempfile
from pathlib import Path

import httpx

from activities.calllog import CallTimer
from activities.comfyui.models import Downloaded, FileRef
from activities.comfyui.transport import (
    SERVICE,
    ComfyHttp,
    parse_json,
    status_error,
    translate_transport_error,
)
from activities.errors import BadRequest, ContentError, OutputMissing

__all__ = ["ALLOWED_EXTENSIONS", "download", "safe_name", "upload_image"]

ALLOWED_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp"}
_BY_CONTENT_TYPE = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str, *, fallback: str = "image", limit: int = 64) -> str:
    """A file-name fragment that cannot leave its directory: [A-Za-z0-9_.-], no leading dot."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")[:limit]
    return cleaned or fallback


def _extension(ref: FileRef, content_type: str) -> str | None:
    suffix = os.path.splitext(ref.filename)[1].lower()
    if suffix in ALLOWED_EXTENSIONS:
        return ALLOWED_EXTENSIONS[suffix]
    return _BY_CONTENT_TYPE.get(content_type.split(";")[0].strip().lower())


async def download(http: ComfyHttp, ref: FileRef, dest_dir: Path, *, stem: str) -> Downloaded:
    """Stream ``/view`` (query parameters exactly as received) into ``dest_dir``.

    Idempotent: the same bytes land at the same name. Raises OutputMissing (404, final),
    BadRequest (400/403, final), ContentError for a non-image type (final), and the transport
    errors of transport.py (retryable). A partial file never remains.
    """
    params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
    where = http.url("/view") + f"?filename={ref.filename}"
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".part-", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with CallTimer(SERVICE, "GET", where) as timer, os.fdopen(fd, "wb") as sink:
            try:
                async with http.client.stream("GET", "/view", params=params) as response:
                    timer.status = response.status_code
                    if response.status_code == 404:
                        raise OutputMissing(
                            "the server has no such file", service=SERVICE, where=where,
                            status=404, hint="The output was deleted from ComfyUI's folder; "
                            "render again",
                        )
                    if not response.is_success:
                        await response.aread()
                        raise status_error(response, where)
                    ext = _extension(ref, response.headers.get("content-type", ""))
                    if ext is None:
                        raise ContentError(
                            f"output {ref.filename!r} is not a png/jpg/webp image",
                            service=SERVICE, where=where,
                            hint="Use a template whose output node saves images",
                        )
                    async for chunk in response.aiter_bytes():
                        digest.update(chunk)
                        size += len(chunk)
                        sink.write(chunk)
            except httpx.TransportError as exc:
                raise translate_transport_error(exc, where) from exc
        sha256 = digest.hexdigest()
        final = dest_dir / f"{safe_name(stem)}-{sha256[:12]}{ext}"
        os.replace(tmp, final)
        return Downloaded(path=final, sha256=sha256, size=size)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


async def upload_image(
    http: ComfyHttp, path: Path, *, subfolder: str = "storyloom", overwrite: bool = False
) -> FileRef:
    """Upload ``path`` into ComfyUI's input folder; returns the server's name for it.

    The server renames on a clash (``ref (1).png``) and de-duplicates identical bytes, so the
    returned name is the one to put into LoadImage. Raises BadRequest (final) if the local file
    is unreadable or the server refuses, transport errors (retryable) otherwise.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadRequest(
            f"cannot read the image to upload: {exc.strerror}", service=SERVICE, where=str(path),
            hint="Check the character's reference picture path",
        ) from exc
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = await http.request(
        "POST", "/upload/image",
        files={"image": (path.name, data, mime)},
        data={"type": "input", "subfolder": subfolder, "overwrite": "true" if overwrite else "false"},
    )
    body = parse_json(response, http.url("/upload/image"))
    return FileRef(str(body["name"]), str(body.get("subfolder", "")), str(body.get("type", "input")))
