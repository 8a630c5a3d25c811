"""storyloom's settings: environment (prefix ``STORYLOOM_``) plus the ecosystem's own names.

``OLLAMA_HOST`` and ``TEMPORAL_ADDRESS`` are honoured when the ``STORYLOOM_`` name is not set.
Every default is finite and works on a laptop with the embedded services.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows_temporal.contracts import GpuSharing

__all__ = [
    "Settings", "image_settings", "load_settings", "normalize_http_url", "normalize_ollama_url",
    "text_settings",
]


def normalize_ollama_url(value: str) -> str:
    """``OLLAMA_HOST`` may be ``host``, ``host:port``, ``:port`` or a URL, as Ollama itself
    reads it: a missing host is 127.0.0.1, a missing port 11434."""
    return normalize_http_url(value, default_port=11434)


def normalize_http_url(value: str, *, default_port: int) -> str:
    """``value`` (``host``, ``host:port``, ``:port`` or a URL) as ``scheme://host:port[/path]``:
    no scheme means http, no host (or 0.0.0.0, a listen address) means 127.0.0.1, no port
    means ``default_port``."""
    value = value.strip().rstrip("/")
    if "://" not in value:
        value = "http://" + value
    scheme, rest = value.split("://", 1)
    hostport, _, path = rest.partition("/")
    if hostport.startswith("0.0.0.0"):
        hostport = "127.0.0.1" + hostport[len("0.0.0.0"):]
    if not hostport or hostport.startswith(":"):
        hostport = "127.0.0.1" + hostport
    if ":" not in hostport.split("]")[-1]:
        hostport += f":{default_port}"
    return f"{scheme}://{hostport}" + (f"/{path}" if path else "")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "storyloom"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STORYLOOM_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""  # empty: SQLite in data_dir
    temporal_address: str = Field(
        default="127.0.0.1:7233",
        validation_alias=AliasChoices("STORYLOOM_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS"),
    )
    temporal_namespace: str = Field(
        default="default",
        validation_alias=AliasChoices("STORYLOOM_TEMPORAL_NAMESPACE", "TEMPORAL_NAMESPACE"),
    )
    temporal_ui_port: int = 8233
    ollama_url: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("STORYLOOM_OLLAMA_URL", "OLLAMA_HOST"),
    )
    comfyui_url: str = "http://127.0.0.1:8188"

    text_model: str = "llama3.2"
    fallback_models: list[str] = Field(default_factory=list)
    embed_model: str = "all-minilm"  # story memory; "" turns it off
    # Story memory budget for the path's summaries, in approximate tokens (words × 1.3).
    context_budget_tokens: int = 1500
    template: str = "scene"
    checkpoint: str = ""  # empty: the template's default checkpoint
    image_width: int = 512
    image_height: int = 512
    gpu_sharing: GpuSharing = GpuSharing.SHARED
    gpu: str = ""  # which GPU's image queue this worker serves; "" = the default one
    # The GPU scheduler (issue 13); read by the worker that starts it (the first GPU worker).
    gpu_lease_ttl_s: float = 10.0  # a lease not renewed this long is taken back (dead holder)
    gpu_ttl_s: float = 15.0  # a GPU whose worker is silent this long gets no new work
    gpu_register_every_s: float = 5.0  # how often a GPU worker says it is alive
    gpu_batch_grants: int = 8  # resident-model grants once the other model waits
    gpu_batch_window_s: float = 120.0  # ... and for at most this long
    gpu_render_depth: int = 2  # renders per GPU at once: one running, one queued in ComfyUI

    # Ollama sends no byte before the first token; a cold load may take minutes.
    ollama_connect_timeout_s: float = 5.0
    ollama_first_byte_timeout_s: float = 600.0
    ollama_idle_timeout_s: float = 120.0
    comfyui_connect_timeout_s: float = 5.0
    comfyui_read_timeout_s: float = 60.0
    comfyui_poll_interval_s: float = 2.0

    metrics_port: int = 0  # 0: no Prometheus endpoint
    log_json: bool | None = None  # None: JSON when stderr is not a terminal

    @field_validator("ollama_url")
    @classmethod
    def _normalize_ollama(cls, v: str) -> str:
        return normalize_ollama_url(v)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # Absolute, so workers and terminals started in other folders name the same store.
        return v.expanduser().absolute()

    @field_validator("gpu")
    @classmethod
    def _gpu_name(cls, v: str) -> str:
        from workflows_temporal.policies import check_gpu_name

        return check_gpu_name(v)

    @field_validator("comfyui_url")
    @classmethod
    def _normalize_comfyui(cls, v: str) -> str:
        return normalize_http_url(v, default_port=8188)

    @field_validator("temporal_address")
    @classmethod
    def _host_and_port(cls, v: str) -> str:
        v = v.strip()
        host, colon, port = v.rpartition(":")
        if "://" in v:
            raise ValueError(f"is a URL; Temporal wants host:port without a scheme, e.g. "
                             f"{v.split('://', 1)[1].split('/')[0] or '127.0.0.1:7233'}")
        if not colon or not port.isdigit() or not host:
            raise ValueError(f"has no port: write host:port, e.g. {v or '127.0.0.1'}:7233")
        return v

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'storyloom.db'}"

    @property
    def store_label(self) -> str:
        """The database URL with its password replaced by ``***`` (safe to print and share)."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.effective_database_url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - a malformed URL: say so without echoing it
            return "(an unparseable STORYLOOM_DATABASE_URL)"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def image_settings(settings: Settings) -> dict[str, object]:
    """The image settings a starter puts into a Scene/Story/RetryImage request (they travel with
    the request, so a running story keeps them): ``checkpoint`` (None: the template's default),
    ``image_width`` and ``image_height`` in pixels."""
    return {"checkpoint": settings.checkpoint or None, "image_width": settings.image_width,
            "image_height": settings.image_height}


def text_settings(settings: Settings) -> dict[str, object]:
    """The text settings that travel with a Scene/Story request like the image ones:
    ``fallback_models`` (STORYLOOM_FALLBACK_MODELS of this terminal; the worker's list is used
    only by requests of older starters)."""
    return {"fallback_models": list(settings.fallback_models)}
