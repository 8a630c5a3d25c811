"""How the emulator frames bytes like Ollama: compact JSON, NDJSON lines, plain-text errors."""

from __future__ import annotations

import ipaddress
import json
import socket
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

__all__ = [
    "BodyError",
    "created_at",
    "dumps",
    "error",
    "host_allowed",
    "json_response",
    "ndjson_line",
    "plain",
    "proxy_502",
    "read_body",
    "type_error",
]

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"


def dumps(obj: Any) -> str:
    """Compact JSON with Go's escaping of <, > and & (those only occur inside strings)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def json_response(obj: Any, status: int = 200) -> web.Response:
    """One compact object, no trailing newline."""
    return web.Response(
        status=status, body=dumps(obj).encode(), headers={"Content-Type": JSON_TYPE}
    )


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, body=text.encode(), headers={"Content-Type": "text/plain"})


def ndjson_line(obj: Any) -> bytes:
    return (dumps(obj) + "\n").encode()


def created_at() -> str:
    """RFC 3339 UTC with ``Z`` and trailing zeros of the fraction trimmed."""
    now = datetime.now(UTC)
    frac = f"{now.microsecond:06d}".rstrip("0")
    return now.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


class BodyError(Exception):
    """The request body is unusable; ``str(e)`` is Ollama's 400 text."""


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise BodyError("missing request body")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(raw.decode(errors="replace").rstrip()):
            raise BodyError("unexpected EOF") from exc
        bad = raw.decode(errors="replace")[exc.pos : exc.pos + 1]
        raise BodyError(f"invalid character '{bad}' looking for beginning of value") from exc


_GO_KIND = {bool: "bool", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}


def type_error(struct: str, body: dict[str, Any], expected: dict[str, tuple[type, ...]]) -> str | None:
    """Go's ``cannot unmarshal`` text for the first field of a wrong JSON type, else None."""
    for name, types in expected.items():
        value = body.get(name)
        if value is None:
            continue
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            kind = _GO_KIND.get(type(value), "value")
            want = "bool" if bool in types else "string" if str in types else types[0].__name__
            return f"json: cannot unmarshal {kind} into Go struct field {struct}.{name} of type {want}"
    return None


def host_allowed(header: str) -> bool:
    """Ollama's check of the ``Host`` header on a loopback-bound server (403 otherwise)."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    if host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def proxy_502() -> web.Response:
    """What a reverse proxy in front of Ollama sends when the upstream fails: HTML, not JSON."""
    html = ("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
            "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n")
    return web.Response(status=502, text=html, content_type="text/html")
