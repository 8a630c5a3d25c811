"""The one place where httpx failures and Ollama error replies become storyloom errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from activities.errors import (
    BadRequest,
    ServerError,
    ServiceBusy,
    ServiceTimeout,
    ServiceUnavailable,
    StoryloomError,
    TruncatedStream,
)

__all__ = ["CallSite", "error_text", "from_status", "translated"]

SERVICE = "ollama"
_START_HINT = "Check that Ollama is running (`ollama serve`) and that OLLAMA_HOST points at it"


@dataclass
class CallSite:
    """Where a call is: its URL, model, and phase ("send", "headers", "body")."""

    url: str
    model: str = ""
    phase: str = "send"
    first_byte_s: float = 0.0
    idle_s: float = 0.0

    @property
    def where(self) -> str:
        return f"{self.url} model={self.model}" if self.model else self.url


def error_text(body: bytes) -> tuple[str, bool]:
    """(message, is_json): the JSON ``error`` field, else the raw text (proxies send HTML)."""
    text = body[:4000].decode(errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        return text.strip(), False
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return parsed["error"], True
    return text.strip(), True


def from_status(status: int, body: bytes, site: CallSite) -> StoryloomError:
    """Classify an HTTP error by status (never by wording). 404 for a model is the caller's."""
    message, _ = error_text(body)
    kw: dict[str, Any] = {"service": SERVICE, "where": site.where, "status": status}
    said = f"HTTP {status}: {message or '(empty body)'}"
    if status in (429, 502, 503, 504):
        return ServiceBusy(said, hint="Ollama is overloaded; the step is retried later", **kw)
    if status in (400, 403, 404, 405, 422):
        hint = (
            "The URL or host is wrong: check OLLAMA_HOST (Ollama answers 403 to non-local hosts)"
            if status in (403, 404, 405)
            else "The request was rejected; fix the model, option or input named above"
        )
        return BadRequest(said, hint=hint, **kw)
    if status >= 500:
        return ServerError(said, hint="Ollama failed before any output; check its log", **kw)
    return BadRequest(said, hint="Unexpected status from Ollama", **kw)


def _from_transport(exc: BaseException, site: CallSite) -> StoryloomError:
    kw: dict[str, Any] = {"service": SERVICE, "where": site.where}
    if isinstance(exc, httpx.ConnectTimeout):
        return ServiceTimeout("connect timed out", hint=_START_HINT, **kw)
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        if site.phase == "body":
            return ServiceTimeout(
                f"no output for {site.idle_s:g} s in the middle of a stream",
                hint="The model stalled; raise the idle timeout if long pauses are normal", **kw,
            )
        return ServiceTimeout(
            f"no answer within {site.first_byte_s:g} s (first-byte timeout)",
            hint="A cold model load may take longer; raise the first-byte timeout or preload it",
            **kw,
        )
    if site.phase == "body":
        return TruncatedStream(
            f"the reply broke off: {type(exc).__name__}: {exc}",
            hint="The connection dropped mid-answer; the step is retried", **kw,
        )
    if isinstance(exc, httpx.ConnectError):
        return ServiceUnavailable(f"cannot connect: {exc}", hint=_START_HINT, **kw)
    return ServiceUnavailable(
        f"connection failed before a reply: {type(exc).__name__}: {exc}", hint=_START_HINT, **kw
    )


@contextlib.contextmanager
def translated(site: CallSite) -> Iterator[CallSite]:
    """Re-raise any foreign failure inside the block as a storyloom error, cause chained."""
    try:
        yield site
    except StoryloomError:
        raise
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise _from_transport(exc, site) from exc
