"""Build the Ollama and ComfyUI clients from Settings (one place for their timeouts)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starter.settings import Settings

if TYPE_CHECKING:
    from activities.comfyui.client import ComfyClient
    from activities.ollama.client import OllamaClient

__all__ = ["comfy_client", "ollama_client"]


def ollama_client(settings: Settings) -> OllamaClient:
    """A client for ``settings.ollama_url``; the caller closes it (``aclose``)."""
    from activities.ollama.client import OllamaClient, OllamaTimeouts

    return OllamaClient(
        settings.ollama_url,
        timeouts=OllamaTimeouts(
            connect=settings.ollama_connect_timeout_s,
            first_byte=settings.ollama_first_byte_timeout_s,
            idle=settings.ollama_idle_timeout_s,
        ),
    )


def comfy_client(settings: Settings) -> ComfyClient:
    """A client for ``settings.comfyui_url``; the caller closes it (``aclose``)."""
    from activities.comfyui.client import ComfyClient
    from activities.comfyui.models import ComfyTimeouts

    return ComfyClient(
        settings.comfyui_url,
        timeouts=ComfyTimeouts(
            connect=settings.comfyui_connect_timeout_s,
            read=settings.comfyui_read_timeout_s,
            poll_interval=settings.comfyui_poll_interval_s,
        ),
    )
