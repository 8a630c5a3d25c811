"""One emulated GPU whose memory an Ollama and a ComfyUI emulator share (both in one process).

A real Ollama and a real ComfyUI know nothing of each other: each allocates CUDA memory on the
card, and whoever allocates last runs out. An SDXL render beside a resident 8B model does not fit
on a 12-24 GB card. The emulators have no memory to run out of, so this object is their model of
that card: the Ollama emulator reports whether it holds a model (loaded, loading, or still listed
in ``/api/ps`` while it unloads), the ComfyUI emulator whether it runs a prompt, and each asks
about the other before it touches the card. There is no such link between real servers: it
exists only to make contention visible in tests and benchmarks.

When the two emulators run in different processes, ``link_llm_url`` makes the ComfyUI side ask
the Ollama emulator's ``GET /api/ps`` instead (a model that is still loading is not listed there
yet, so that link sees a little less than the in-process one; the Ollama side then counts no
conflicts, having no way to see the renders).

``BusyClock`` measures busy time as the union of overlapping busy spans (wall seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp

__all__ = ["BusyClock", "EmulatedGpu"]


class BusyClock:
    """Wall seconds during which at least one holder was inside ``busy()``."""

    def __init__(self) -> None:
        self._holders = 0
        self._since = 0.0
        self._total = 0.0

    def enter(self) -> None:
        if self._holders == 0:
            self._since = time.monotonic()
        self._holders += 1

    def leave(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._total += time.monotonic() - self._since

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @property
    def seconds(self) -> float:
        running = time.monotonic() - self._since if self._holders else 0.0
        return self._total + running


class EmulatedGpu:
    """The link between the emulators that share one card, and that card's busy clock.

    ``attach_llm(resident)`` is called by the Ollama emulator, ``attach_renderer(rendering,
    checkpoint)`` by the ComfyUI emulator: "do I hold memory on this card right now?", and for
    ComfyUI also "is a checkpoint resident?" (kept in VRAM between prompts until ``/free``).
    ``clock`` counts a second once however many emulators are busy in it (GPU busy time).
    """

    def __init__(self, name: str = "gpu0") -> None:
        self.name = name
        self.clock = BusyClock()
        self._llm: Callable[[], bool] | None = None
        self._llm_url: str | None = None
        self._renderer: Callable[[], bool] | None = None
        self._checkpoint: Callable[[], bool] | None = None

    def attach_llm(self, resident: Callable[[], bool]) -> None:
        self._llm = resident

    def link_llm_url(self, ollama_url: str) -> None:
        """Share the card with the Ollama emulator at ``ollama_url`` (another process)."""
        self._llm_url = ollama_url.rstrip("/")

    def attach_renderer(self, rendering: Callable[[], bool], checkpoint: Callable[[], bool]) -> None:
        self._renderer = rendering
        self._checkpoint = checkpoint

    @property
    def shared_with_llm(self) -> bool:
        return self._llm is not None or self._llm_url is not None

    async def llm_resident(self) -> bool:
        """True while the linked Ollama holds a model on this card (False when none is linked;
        an Ollama that does not answer holds nothing: a dead process frees its memory)."""
        if self._llm is not None:
            return self._llm()
        if self._llm_url is None:
            return False
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with (aiohttp.ClientSession(timeout=timeout) as http,
                        http.get(self._llm_url + "/api/ps") as reply):
                body = await reply.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return bool(isinstance(body, dict) and body.get("models"))

    def rendering(self) -> bool:
        """True while the linked ComfyUI runs a prompt (False when none is linked)."""
        return self._renderer is not None and self._renderer()

    def checkpoint_resident(self) -> bool:
        """True while the linked ComfyUI keeps a checkpoint in VRAM (False when none is linked)."""
        return self._checkpoint is not None and self._checkpoint()

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "shared_with_llm": self.shared_with_llm,
                "busy_s": round(self.clock.seconds, 4)}
