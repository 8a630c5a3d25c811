"""The Ollama emulator's HTTP server: routing, lifecycle, and the /_emulator control routes."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self

from aiohttp import web

from emulators.gpu import EmulatedGpu
from emulators.ollama import meta, wire
from emulators.ollama.catalogue import DEFAULT_MODELS, ModelSpec
from emulators.ollama.generation import handle_generation
from emulators.ollama.state import Core, ModelState, parse_faults

__all__ = ["OllamaEmulator", "serve"]

logger = logging.getLogger("storyloom.emulators.ollama")

Handler = Callable[[Core, web.Request, Any], Awaitable[web.StreamResponse]]
_KEEP_REQUESTS = 500

_ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": meta.root, "HEAD": meta.root},
    "/api/version": {"GET": meta.version, "HEAD": meta.version},
    "/api/tags": {"GET": meta.tags, "HEAD": meta.tags},
    "/api/ps": {"GET": meta.ps},
    "/api/show": {"POST": meta.show},
    "/api/generate": {"POST": handle_generation},
    "/api/chat": {"POST": handle_generation},
    "/api/embed": {"POST": meta.embed},
    "/api/embeddings": {"POST": meta.embeddings},
}


class OllamaEmulator:
    """A protocol-faithful Ollama server on loopback, for tests and demos without a GPU.

    Deterministic: the same model, prompt, format and options give the same text and chunking.
    Faults (see ``state.FAULT_KEYS``) are armed with ``faults=``, ``set_faults`` or
    ``POST /_emulator/faults``; ``{}`` clears them. ``requests`` lists (path, body) received.
    """

    def __init__(
        self,
        *,
        models: list[ModelSpec] | None = None,
        time_scale: float = 1.0,
        faults: dict[str, Any] | None = None,
        gpu: EmulatedGpu | None = None,
    ) -> None:
        specs = {s.full_name: s for s in (models if models is not None else DEFAULT_MODELS)}
        fault_dict = parse_faults(faults or {})
        self.time_scale = time_scale
        state = ModelState(specs, fault_dict, time_scale, gpu=gpu)
        if gpu is not None:
            gpu.attach_llm(state.resident)
        self.core = Core(state, fault_dict, time_scale)
        self.url = ""
        self._check_host = True
        self._runner: web.AppRunner | None = None

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: requests, generations, loads (model switches), unloads, load_s and busy_s
        (wall seconds loading / holding a model's slot), vram_conflicts, loads_beside_checkpoint
        (a load while the card's ComfyUI kept a checkpoint, i.e. nobody sent it /free), and ``gpu`` (the shared
        card's name and busy_s, or None when this emulator has a GPU of its own)."""
        models = self.core.models
        return {"requests": 0, "generations": 0, "unloads": 0, "loads": models.loads,
                "load_s": round(models.load_s, 4), "busy_s": round(models.clock.seconds, 4),
                "vram_conflicts": models.vram_conflicts,
                "loads_beside_checkpoint": models.loads_beside_checkpoint,
                "gpu": models.gpu.snapshot() if models.gpu is not None else None,
                **self.core.stats}

    @property
    def requests(self) -> list[tuple[str, Any]]:
        return list(self.core.requests)

    @property
    def faults(self) -> dict[str, Any]:
        return dict(self.core.faults)

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Replace every armed fault (ValueError for unknown keys or wrong types)."""
        self.core.replace_faults(parse_faults(faults))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client disconnect cancels generation and aborts a cold load
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        self._check_host = _is_loopback(host)  # Ollama checks Host only when bound to loopback
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None and isinstance(server, asyncio.Server)
        bound = server.sockets[0].getsockname()
        self.url = f"http://{host}:{bound[1]}"
        logger.info("ollama emulator listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_emulator/"):
            return await self._control(request)
        if self._check_host and not wire.host_allowed(request.headers.get("Host", "")):
            return web.Response(status=403)  # Ollama's host check, empty body
        if self.core.take_proxy_502():
            return wire.proxy_502()
        methods = _ROUTES.get(path)
        if methods is None:
            return wire.plain(404, "404 page not found")
        handler = methods.get(request.method)
        if handler is None:
            return wire.plain(405, "405 method not allowed")
        self.core.count("requests")
        body: Any = None
        if request.method == "POST":
            try:
                body = await wire.read_body(request)
            except wire.BodyError as exc:
                self._remember(path, None)
                return wire.error(400, str(exc))
        self._remember(path, body)
        return await handler(self.core, request, body)

    def _remember(self, path: str, body: Any) -> None:
        self.core.requests.append((path, body))
        del self.core.requests[:-_KEEP_REQUESTS]

    async def _control(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/_emulator/stats" and method == "GET":
            return wire.json_response(self.stats)
        if path == "/_emulator/requests" and method == "GET":
            return wire.json_response([{"path": p, "body": b} for p, b in self.core.requests])
        if path == "/_emulator/faults" and method == "GET":
            return wire.json_response(self.faults)
        if path == "/_emulator/faults" and method == "POST":
            try:
                self.set_faults(await wire.read_body(request))
            except (wire.BodyError, ValueError) as exc:
                return wire.error(400, str(exc))
            return wire.json_response(self.faults)
        return wire.plain(404, "404 page not found")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    host: str, port: int, *, time_scale: float = 1.0, faults: dict[str, Any] | None = None,
    gpu: EmulatedGpu | None = None,
) -> None:
    """Run an emulator on host:port until cancelled (on the shared card ``gpu`` if given)."""
    emulator = OllamaEmulator(time_scale=time_scale, faults=faults, gpu=gpu)
    await emulator.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
