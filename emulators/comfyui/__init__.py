"""Protocol-faithful ComfyUI 0.33.0 emulator (HTTP + WebSocket) with fault injection."""

from __future__ import annotations

from emulators.comfyui.server import ComfyEmulator, serve

__all__ = ["ComfyEmulator", "serve"]
