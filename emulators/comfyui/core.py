"""The emulated server's process state: queue, sockets, cache, faults, stats, worker and restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from emulators.comfyui.catalog import object_info
from emulators.comfyui.faults import Faults
from emulators.comfyui.hub import Hub
from emulators.comfyui.ledger import Ledger
from emulators.gpu import BusyClock, EmulatedGpu

__all__ = ["CORE", "Core"]

logger = logging.getLogger(__name__)


class Core:
    """Everything one emulated ComfyUI process holds in memory (lost on restart) plus its folders."""

    def __init__(
        self, root: Path, time_scale: float, faults: Faults, gpu: EmulatedGpu | None = None
    ) -> None:
        self.root = root
        for sub in ("input", "output", "temp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.time_scale = time_scale
        self.faults = faults
        self.base_faults: dict[str, Any] = {}  # start-up settings that faults POSTs merge over
        self.hub = Hub()
        self.ledger = Ledger()
        self.cache: dict[bytes, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.interrupt_requested = False
        self.current_node: str | None = None
        self.wake = asyncio.Event()
        self.worker: asyncio.Task[None] | None = None
        self.stats: dict[str, Any] = {
            "submitted": 0,
            "executed": 0,
            "executed_by_prompt": {},
            "completed": 0,
            "interrupted": 0,
            "failed": 0,
            "sampler_steps": 0,
            "restarts": 0,
            "ws_drops": 0,
            "checkpoint_loads": 0,
            "checkpoint_load_s": 0.0,
            "oom_errors": 0,
            "ws_connects": 0,
            "prompts_posted": 0,
            "completed_s": 0.0,  # wall seconds of prompts that succeeded, without checkpoint loads
        }
        # the emulated card (emulators/comfyui/vram.py): what is resident, when it was busy
        self.gpu = gpu if gpu is not None else EmulatedGpu()
        self.gpu.attach_renderer(lambda: self.ledger.running is not None,
                                 lambda: self.resident_checkpoint is not None)
        self.clock = BusyClock()  # wall seconds running prompts
        self.resident_checkpoint: str | None = None
        self.free_flags: dict[str, bool] | None = None  # a /free waiting for the running prompt

    def node_info(self) -> dict[str, Any]:
        return object_info(self.root / "input", self.faults.checkpoints)

    def stats_snapshot(self) -> dict[str, Any]:
        """``stats`` plus busy_s, the resident checkpoint, the card and the node running now
        (``/_emulator/stats``)."""
        return {**self.stats, "busy_s": round(self.clock.seconds, 4),
                "resident_checkpoint": self.resident_checkpoint, "gpu": self.gpu.snapshot(),
                "current_node": self.current_node}

    def status_data(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.ledger.remaining}}}

    async def broadcast_status(self) -> None:
        await self.hub.send("status", self.status_data())

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Flag the running prompt (all, or only if it is `prompt_id`); True if one was flagged."""
        running = self.ledger.running
        if running is None or (prompt_id is not None and running.prompt_id != prompt_id):
            return False
        self.interrupt_requested = True
        return True

    def start_worker(self) -> None:
        from emulators.comfyui.executor import worker_loop

        self.worker = asyncio.get_running_loop().create_task(worker_loop(self))

    async def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
            self.worker = None

    def restart(self) -> None:
        """Like a kill -9 and fresh start: sockets abort, memory is lost, files stay."""
        if self.worker is not None:
            self.worker.cancel()
        self.hub.drop_all()
        self.ledger = Ledger()
        self.cache.clear()
        self.interrupt_requested = False
        self.current_node = None
        self.resident_checkpoint = None  # a dead process holds no VRAM
        self.free_flags = None
        self.wake = asyncio.Event()
        self.stats["restarts"] += 1
        self.start_worker()
        logger.info("comfyui emulator restarted (queue, history and cache dropped)")


CORE = web.AppKey("comfy_core", Core)
