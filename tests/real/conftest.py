"""Targets for the client tests in tests/real: always our emulators, and real servers when asked.

Every test here runs once per target. The ``emulator`` target keeps the assertions honest in
every run (they must hold for our emulators); the ``real`` target is marked ``real`` and skips,
saying exactly which variables enable it, unless a real server is named in the environment:

- Ollama: ``STORYLOOM_REAL_OLLAMA_URL`` (e.g. http://127.0.0.1:11434),
  ``STORYLOOM_REAL_OLLAMA_MODEL`` (an installed completion model, e.g. llama3.2) and
  ``STORYLOOM_REAL_EMBED_MODEL`` (an installed embedding model, e.g. all-minilm).
- ComfyUI: ``STORYLOOM_REAL_COMFYUI_URL`` (e.g. http://127.0.0.1:8188); optionally
  ``STORYLOOM_REAL_COMFYUI_CHECKPOINT`` (a file in models/checkpoints) for the graphs that need
  a model; without it only model-free graphs run.

Run only the real ones with ``pytest tests/real -m real``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulators.comfyui import ComfyEmulator
from emulators.ollama import OllamaEmulator

__all__ = ["ComfyTarget", "OllamaTarget", "comfy_target", "ollama_target"]

OLLAMA_VARS = ("STORYLOOM_REAL_OLLAMA_URL", "STORYLOOM_REAL_OLLAMA_MODEL",
               "STORYLOOM_REAL_EMBED_MODEL")
COMFY_VAR = "STORYLOOM_REAL_COMFYUI_URL"
COMFY_CHECKPOINT_VAR = "STORYLOOM_REAL_COMFYUI_CHECKPOINT"


@dataclass(frozen=True)
class OllamaTarget:
    """An Ollama server under test: its URL, a completion model and an embedding model."""

    kind: str  # "emulator" | "real"
    url: str
    model: str
    embed_model: str


@dataclass(frozen=True)
class ComfyTarget:
    """A ComfyUI server under test. ``checkpoint`` is None when only model-free graphs may run;
    ``emulator`` is set for our emulator, so a test can arm its faults (e.g. slow nodes)."""

    kind: str  # "emulator" | "real"
    url: str
    checkpoint: str | None
    emulator: ComfyEmulator | None = None


_TARGETS = ["emulator", pytest.param("real", marks=pytest.mark.real)]


def _missing(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if not os.environ.get(name)]


@pytest.fixture(params=_TARGETS)
async def ollama_target(request: pytest.FixtureRequest) -> AsyncIterator[OllamaTarget]:
    if request.param == "real":
        missing = _missing(OLLAMA_VARS)
        if missing:
            pytest.skip(
                f"real Ollama not configured: set {', '.join(missing)} "
                "(e.g. STORYLOOM_REAL_OLLAMA_URL=http://127.0.0.1:11434 "
                "STORYLOOM_REAL_OLLAMA_MODEL=llama3.2 STORYLOOM_REAL_EMBED_MODEL=all-minilm "
                "pytest tests/real -m real)"
            )
        yield OllamaTarget("real", os.environ[OLLAMA_VARS[0]].rstrip("/"),
                           os.environ[OLLAMA_VARS[1]], os.environ[OLLAMA_VARS[2]])
        return
    emulator = OllamaEmulator(time_scale=0.01)
    await emulator.start("127.0.0.1", 0)
    try:
        yield OllamaTarget("emulator", emulator.url, "llama3.2", "all-minilm")
    finally:
        await emulator.stop()


@pytest.fixture(params=_TARGETS)
async def comfy_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ComfyTarget]:
    if request.param == "real":
        if not os.environ.get(COMFY_VAR):
            pytest.skip(
                f"real ComfyUI not configured: set {COMFY_VAR} "
                "(e.g. STORYLOOM_REAL_COMFYUI_URL=http://127.0.0.1:8188, optionally "
                f"{COMFY_CHECKPOINT_VAR}=<file in models/checkpoints> for model graphs; "
                "pytest tests/real -m real)"
            )
        yield ComfyTarget("real", os.environ[COMFY_VAR].rstrip("/"),
                          os.environ.get(COMFY_CHECKPOINT_VAR) or None)
        return
    emulator = ComfyEmulator(tmp_path / "comfy", time_scale=0.01)
    await emulator.start()
    try:
        yield ComfyTarget("emulator", emulator.url, "v1-5-pruned-emaonly.safetensors", emulator)
    finally:
        await emulator.stop()
