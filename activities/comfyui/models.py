"""The plain data the ComfyUI client hands out: job states, file references, progress events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "ComfyTimeouts",
    "Downloaded",
    "FileRef",
    "JobState",
    "JobStatus",
    "ProgressEvent",
]


class JobState(StrEnum):
    """Where a prompt is, as HTTP says (never decided from the WebSocket alone)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # never seen, deleted from the queue, or lost in a restart


@dataclass
class JobStatus:
    """One reading of a job. ``error`` is the ``execution_error`` payload of a failed job.

    ``queue_position`` counts the prompts ahead of this one (the running one included) while
    it is pending; None otherwise.
    """

    state: JobState
    queue_position: int | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class FileRef:
    """A file on the ComfyUI server, exactly as the server named it (never a local path)."""

    filename: str
    subfolder: str
    type: str


@dataclass
class ProgressEvent:
    """One step of a followed prompt.

    ``kind``: "queued" | "started" | "node" | "step" | "reconnected" | "done".
    """

    kind: str
    prompt_id: str
    node: str | None = None
    value: int = 0
    max: int = 0
    queue_position: int | None = None


@dataclass(frozen=True)
class ComfyTimeouts:
    """Seconds. ``read`` bounds one HTTP answer; ``poll_interval`` paces the HTTP reads of a
    followed job (the truth, read whatever the socket says); ``ws_silence`` is how long the
    WebSocket may hear nothing at all while the job runs before it is reopened (a clientId that
    ComfyUI unregistered gets nothing more until a new connect). A socket that fails to open or
    drops is tried again after ``ws_retry_initial``, doubling up to ``ws_retry_max`` while it
    keeps failing (a socket that stayed up ``ws_retry_max`` starts the series over)."""

    connect: float = 5.0
    read: float = 60.0
    poll_interval: float = 2.0
    ws_silence: float = 10.0
    ws_retry_initial: float = 0.5
    ws_retry_max: float = 30.0


@dataclass(frozen=True)
class Downloaded:
    """A downloaded output: our local path (name chosen by us), its sha256 and size in bytes."""

    path: Path
    sha256: str
    size: int
