"""The ComfyUI emulator as an object: build the aiohttp app, start/stop it, faults, restart."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators.comfyui.core import CORE, Core
from emulators.comfyui.faults import Faults, parse_faults
from emulators.comfyui.legacy import legacy_middleware
from emulators.comfyui.routes_files import file_routes
from emulators.comfyui.routes_jobs import jobs_routes
from emulators.comfyui.routes_misc import control_routes, misc_routes
from emulators.comfyui.routes_queue import queue_routes
from emulators.gpu import EmulatedGpu

__all__ = ["ComfyEmulator", "serve"]

logger = logging.getLogger(__name__)

MAX_UPLOAD = 104857600


def build_app(core: Core) -> web.Application:
    app = web.Application(
        client_max_size=MAX_UPLOAD + 1024 * 1024, middlewares=[legacy_middleware]
    )
    app[CORE] = core
    for method, path, handler in queue_routes() + file_routes() + misc_routes():
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    for method, path, handler in jobs_routes() + control_routes():
        app.router.add_route(method, path, handler)
    return app


class ComfyEmulator:
    """A protocol-faithful ComfyUI 0.33.0 server (HTTP + WebSocket) over folders in `root_dir`.

    `start()` binds (port 0 = any free port) and returns the base URL; `stop()` is idempotent.
    `set_faults()` replaces the whole fault set (raises ValueError for unknown keys or bad values;
    `{"restart": true}` also restarts). `restart()` behaves like kill -9 plus a fresh start: sockets
    abort (1006), queue/history/jobs/cache are lost, `number` restarts at 0, files stay. `stats`
    is a snapshot that survives restarts. Must be used from the event loop that started it.
    `gpu`: the emulated card, shared with an Ollama emulator given the same object (then a sampler
    or VAE node fails with CUDA out of memory while that Ollama holds a model; see vram.py).
    """

    def __init__(
        self,
        root_dir: Path,
        *,
        time_scale: float = 1.0,
        faults: dict[str, Any] | None = None,
        gpu: EmulatedGpu | None = None,
    ) -> None:
        self.root_dir = Path(root_dir)
        self.time_scale = time_scale
        self.gpu = gpu
        initial, _ = parse_faults(faults or {})
        self._initial_faults: Faults = initial
        # Start-up settings (e.g. --checkpoint-load-delay): the base every faults POST is
        # merged over, so a test's faults never reset them.
        self._base_faults = {k: v for k, v in (faults or {}).items() if k != "restart"}
        self._core: Core | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("ComfyEmulator is not started")
        return self._url

    @property
    def core(self) -> Core:
        if self._core is None:
            self._core = Core(self.root_dir, self.time_scale, self._initial_faults, self.gpu)
            self._core.base_faults = dict(self._base_faults)
        return self._core

    @property
    def stats(self) -> dict[str, Any]:
        return copy.deepcopy(self.core.stats_snapshot())

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        core = self.core
        self._runner = web.AppRunner(build_app(core), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = int(sockets[0].getsockname()[1]) if sockets else port
        self._url = f"http://{host}:{bound}"
        core.start_worker()
        logger.info("comfyui emulator listening on %s (root %s)", self._url, self.root_dir)
        return self._url

    async def stop(self) -> None:
        if self._core is not None:
            await self._core.stop_worker()
            self._core.hub.drop_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def set_faults(self, faults: dict[str, Any]) -> None:
        """Faults merged over the start-up settings (``faults`` keys win)."""
        parsed, restart = parse_faults({**self.core.base_faults, **faults})
        self.core.faults = parsed
        if restart:
            self.restart()

    def restart(self) -> None:
        self.core.restart()


async def serve(
    host: str,
    port: int,
    *,
    root_dir: Path,
    time_scale: float = 1.0,
    faults: dict[str, Any] | None = None,
    gpu: EmulatedGpu | None = None,
) -> None:
    """Run an emulator until cancelled (on the shared card ``gpu`` if given)."""
    emulator = ComfyEmulator(root_dir, time_scale=time_scale, faults=faults, gpu=gpu)
    url = await emulator.start(host, port)
    logger.info("ComfyUI emulator ready at %s", url)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
