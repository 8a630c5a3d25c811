"""One emulated GPU whose memory an Ollama and a ComfyUI emulator share (both in one process).

A real Ollama and a real ComfyUI know nothing of each other: each allocates CUDA memory on the
card, and whoever allocates last runs out. An SDXL render beside a resident 8B model does not fit
on a 12-24 GB card. The emulators have no memory to run out of, so this object is their model of
that card: the Ollama emulator reports whether it holds a model (loaded, loading, or still listed
in ``/api/ps`` while it unloads), the ComfyUI emulator whether it runs a prompt, and each asks
about the other before it touches the card. There is no such link between real servers: it
exists only to make contention visible in tests and benchmarks.

``BusyClock`` measures busy time as the union of overlapping busy spans (wall seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

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

    ``attach_llm(resident)`` is called by the Ollama emulator, ``attach_renderer(rendering)`` by
    the ComfyUI emulator; both callables answer "do I hold memory on this card right now?".
    ``clock`` counts a second once however many emulators are busy in it (GPU busy time).
    """

    def __init__(self, name: str = "gpu0") -> None:
        self.name = name
        self.clock = BusyClock()
        self._llm: Callable[[], bool] | None = None
        self._renderer: Callable[[], bool] | None = None

    def attach_llm(self, resident: Callable[[], bool]) -> None:
        self._llm = resident

    def attach_renderer(self, rendering: Callable[[], bool]) -> None:
        self._renderer = rendering

    @property
    def shared_with_llm(self) -> bool:
        return self._llm is not None

    def llm_resident(self) -> bool:
        """True while the linked Ollama holds a model on this card (False when none is linked)."""
        return self._llm is not None and self._llm()

    def rendering(self) -> bool:
        """True while the linked ComfyUI runs a prompt (False when none is linked)."""
        return self._renderer is not None and self._renderer()

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "shared_with_llm": self.shared_with_llm,
                "busy_s": round(self.clock.seconds, 4)}
