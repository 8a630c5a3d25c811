"""Pydantic shapes of Ollama's requests and replies; every reply field is optional (servers drift)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "OPTION_TYPES",
    "EmbedResponse",
    "EmbeddingsResponse",
    "GenerateChunk",
    "GenerateRequest",
    "GenerateResult",
    "LoadedModel",
    "ModelDetails",
    "ModelInfo",
]

# Known `options` and the JSON types the server accepts for them (ints may be floats: truncated).
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    **{k: (int, float) for k in (
        "temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
        "frequency_penalty", "num_ctx", "num_predict", "top_k", "seed", "repeat_last_n",
        "num_keep", "num_batch", "num_gpu", "num_thread", "main_gpu", "draft_num_predict",
    )},
    "use_mmap": (bool,),
    "stop": (list,),
}


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GenerateRequest(BaseModel):
    """The body of POST /api/generate; sent with ``exclude_none`` so absent means absent."""

    model: str
    prompt: str
    stream: bool
    system: str | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None
    think: bool | str | None = None


class GenerateChunk(_Reply):
    """One NDJSON line of a streamed generate (the last has ``done`` and the metrics)."""

    model: str | None = None
    created_at: str | None = None
    response: str = ""
    thinking: str | None = None
    done: bool = False
    done_reason: str | None = None
    context: list[int] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    error: str | None = None


class GenerateResult(_Reply):
    """A whole answer: the text plus the final line's figures (nanoseconds, maybe absent)."""

    model: str | None = None
    text: str = ""
    thinking: str = ""
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    eval_duration: int | None = None

    @property
    def truncated(self) -> bool:
        """True when the model stopped at num_predict or the context limit."""
        return self.done_reason == "length"


class ModelDetails(_Reply):
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None
    format: str | None = None


class ModelInfo(_Reply):
    """An installed model as /api/tags lists it (``name:tag``)."""

    name: str | None = None
    model: str | None = None
    modified_at: str | None = None
    size: int | None = None
    digest: str | None = None
    details: ModelDetails | None = None

    @property
    def full_name(self) -> str:
        return self.name or self.model or ""


class LoadedModel(ModelInfo):
    """A model /api/ps lists as loaded."""

    expires_at: str | None = None
    size_vram: int | None = None
    context_length: int | None = None


class EmbedResponse(_Reply):
    model: str | None = None
    embeddings: list[list[float]] = []


class EmbeddingsResponse(_Reply):
    embedding: list[float] = []
