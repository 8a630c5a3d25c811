"""A protocol-faithful Ollama server with fault injection (see /work/shared/protocols/ollama.md)."""

from __future__ import annotations

from emulators.ollama.catalogue import DEFAULT_MODELS, ModelSpec
from emulators.ollama.server import OllamaEmulator, serve

__all__ = ["DEFAULT_MODELS", "ModelSpec", "OllamaEmulator", "serve"]
