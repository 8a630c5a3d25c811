"""Fault-injection settings of the ComfyUI emulator and their parsing from a JSON object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_STEP_DELAY", "FaultError", "Faults", "parse_faults"]

DEFAULT_STEP_DELAY = 0.05


class FaultError(ValueError):
    """A fault object with unknown keys or badly typed values (HTTP 400)."""


@dataclass(frozen=True)
class Faults:
    """The active faults; every POST replaces the whole set (`{}` restores these defaults).

    step_delay: seconds per KSampler step (× time_scale). node_delay: seconds per other executed
    node (× time_scale). ws_drop_after_steps: abort every socket after N sampler steps of a prompt,
    once per prompt. suppress_ws_completion: no terminal frame and no trailing `executing null`.
    error_at_node: class name whose nodes raise RuntimeError when they execute.
    checkpoint_load_delay: seconds (× time_scale) to move a checkpoint into VRAM when a sampler or
    VAE node needs one that is not resident (first use, after `/free`, after an out-of-memory).
    slow_node_class / slow_node_seconds: nodes of that class run that long (× time_scale) with no
    interrupt check inside, like a checkpoint load or a big VAE decode: an interrupt lands at
    the next node boundary. ws_drop_on_connect: abort every WebSocket right after its handshake
    (a proxy that keeps dropping it). legacy: answer like a server before 0.33 (no /api/jobs,
    a /prompt 400 whose ``error`` is a plain string, history entries without status and meta).
    checkpoints: the checkpoint file names the server has (None: catalog.FAKE_CHECKPOINTS).
    """

    step_delay: float = DEFAULT_STEP_DELAY
    node_delay: float = 0.0
    ws_drop_after_steps: int | None = None
    suppress_ws_completion: bool = False
    error_at_node: str | None = None
    checkpoint_load_delay: float = 0.0
    slow_node_class: str | None = None
    slow_node_seconds: float = 0.0
    ws_drop_on_connect: bool = False
    legacy: bool = False
    checkpoints: tuple[str, ...] | None = None


_NUMBERS = ("step_delay", "node_delay", "checkpoint_load_delay", "slow_node_seconds")
_FLAGS = ("suppress_ws_completion", "ws_drop_on_connect", "legacy", "restart")
KNOWN = frozenset(
    {*_NUMBERS, *_FLAGS, "ws_drop_after_steps", "error_at_node", "slow_node_class", "checkpoints"}
)


def parse_faults(raw: Any) -> tuple[Faults, bool]:
    """(faults, restart_requested); raises FaultError naming unknown keys or bad values."""
    if not isinstance(raw, dict):
        raise FaultError("faults must be a JSON object")
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise FaultError(f"unknown fault key(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key in _NUMBERS:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise FaultError(f"{key} must be a non-negative number")
            values[key] = float(value)
    drop = raw.get("ws_drop_after_steps")
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, int) or drop < 1):
        raise FaultError("ws_drop_after_steps must be a positive integer or null")
    values["ws_drop_after_steps"] = drop
    for key in _FLAGS:
        if not isinstance(raw.get(key, False), bool):
            raise FaultError(f"{key} must be a boolean")
        if key != "restart":
            values[key] = raw.get(key, False)
    for key in ("error_at_node", "slow_node_class"):
        node = raw.get(key)
        if node is not None and not isinstance(node, str):
            raise FaultError(f"{key} must be a node class name or null")
        values[key] = node
    names = raw.get("checkpoints")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise FaultError("checkpoints must be a list of file names or null")
    values["checkpoints"] = tuple(names) if names is not None else None
    return Faults(**values), bool(raw.get("restart", False))
