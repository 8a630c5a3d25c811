"""The emulator's catalogue of installed models and Ollama's model-name rules."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MODELS", "ModelSpec", "normalise_name", "valid_name"]


def normalise_name(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``; lookups are case-insensitive, so lower-case it."""
    name = name.strip().lower()
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def valid_name(name: str) -> bool:
    """A rough form of Ollama's name check: non-empty parts, no spaces or odd characters."""
    if not name or any(c.isspace() for c in name):
        return False
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789._-/:")
    return set(name.lower()) <= allowed and not name.endswith(":") and "//" not in name


@dataclass(frozen=True)
class ModelSpec:
    """One installed model: what it can do and what /api/tags, /api/show and /api/ps report.

    ``load_s`` is the cold-load time in seconds (scaled by the emulator's ``time_scale``).
    """

    name: str
    capabilities: tuple[str, ...] = ("completion",)
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization: str = "Q4_K_M"
    size: int = 2_019_393_189
    context_length: int = 4096
    embedding_length: int = 3072
    load_s: float = 0.0
    modified_at: str = "2025-05-04T17:37:44.706015396-07:00"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return normalise_name(self.name)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.full_name.encode()).hexdigest()

    @property
    def is_embedding(self) -> bool:
        return "embedding" in self.capabilities

    def details(self) -> dict[str, object]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }

    def tag_entry(self) -> dict[str, object]:
        return {
            "name": self.full_name,
            "model": self.full_name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("llama3.2", ("completion", "tools")),
    ModelSpec(
        "qwen3", ("completion", "tools", "thinking"), family="qwen3", parameter_size="8.2B",
        size=5_225_388_164, embedding_length=4096,
    ),
    ModelSpec(
        "all-minilm", ("embedding",), family="bert", parameter_size="23M", quantization="F16",
        size=45_960_996, context_length=512, embedding_length=384,
    ),
)
