"""One HTTP exchange with ComfyUI: send once, log it, translate failures into storyloom errors.

Status and transport failures map as ARCHITECTURE rule 1 wants: connection refused/reset →
ServiceUnavailable, timeouts → ServiceTimeout, 500 → ServerError, 429/502/503/504 → ServiceBusy
(all retryable); other 4xx → BadRequest (final). Callers that give a status its own meaning
(404 of a job, 400 of /prompt) list it in ``accept`` and read the response themselves.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from activities.calllog import CallTimer
from activities.errors import (
    BadRequest,
    ServerError,
    ServiceBusy,
    ServiceTimeout,
    ServiceUnavailable,
    StoryloomError,
)

__all__ = ["SERVICE", "ComfyHttp", "parse_json", "translate_transport_error"]

SERVICE = "comfyui"
_BUSY = {429, 502, 503, 504}


def translate_transport_error(exc: httpx.TransportError, where: str) -> StoryloomError:
    """httpx's transport failures as storyloom errors (both retryable)."""
    if isinstance(exc, httpx.TimeoutException):
        return ServiceTimeout(
            f"no answer in time ({type(exc).__name__})", service=SERVICE, where=where,
            hint="ComfyUI is slow or stuck; check its console, or raise the comfyui timeouts",
        )
    return ServiceUnavailable(
        f"cannot reach ComfyUI ({type(exc).__name__}: {exc})", service=SERVICE, where=where,
        hint="Is ComfyUI running at this address? Check STORYLOOM_COMFYUI_URL",
    )


def parse_json(response: httpx.Response, where: str) -> Any:
    """The JSON body; an empty or non-JSON body where JSON was promised is a server fault."""
    if not response.content:
        raise ServerError(
            f"empty answer with status {response.status_code} where JSON was expected",
            service=SERVICE, where=where, status=response.status_code,
        )
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise ServerError(
            f"answer is not JSON (status {response.status_code}, "
            f"{response.headers.get('content-type', 'no content-type')})",
            service=SERVICE, where=where, status=response.status_code,
            hint="Is this really a ComfyUI server?",
        ) from exc


def status_error(response: httpx.Response, where: str) -> StoryloomError:
    """The error for an unexpected status, with the start of the body for the user."""
    code = response.status_code
    text = response.text.strip()[:300] if response.content else "(empty body)"
    if code in _BUSY:
        return ServiceBusy(f"server busy ({code}): {text}", service=SERVICE, where=where,
                           status=code, hint="ComfyUI or a proxy is overloaded; it will be retried")
    if code >= 500:
        return ServerError(f"server error ({code}): {text}", service=SERVICE, where=where,
                           status=code, hint="See the ComfyUI console for the traceback")
    return BadRequest(f"request refused ({code}): {text}", service=SERVICE, where=where,
                      status=code, hint="This request cannot succeed as sent")


class ComfyHttp:
    """The shared ``httpx.AsyncClient`` of one ComfyUI server. One attempt per call, no retry."""

    def __init__(
        self, base_url: str, *, connect: float, read: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def request(
        self, method: str, path: str, *, accept: frozenset[int] = frozenset(), **kw: Any
    ) -> httpx.Response:
        """Send once. Returns 2xx answers and statuses in ``accept``; raises for anything else."""
        where = self.url(path)
        with CallTimer(SERVICE, method, where) as timer:
            try:
                response = await self.client.request(method, path, **kw)
            except httpx.TransportError as exc:
                raise translate_transport_error(exc, where) from exc
            timer.status = response.status_code
            if response.is_success or response.status_code in accept:
                return response
            raise status_error(response, where)

    async def get_json(self, path: str, **kw: Any) -> Any:
        response = await self.request("GET", path, **kw)
        return parse_json(response, self.url(path))
