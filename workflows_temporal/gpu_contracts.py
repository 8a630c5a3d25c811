"""Data of the GPU scheduler (issue 13): lease requests, grants, GPU registrations, its state.

Pure data shared by ``GpuSchedulerWorkflow``, the ``acquire_gpu`` activity and the lease holders
(LLM and render activities). Only ids, names and numbers: the whole state is carried across
continue-as-new, so it stays small (a few hundred bytes per GPU, lease and waiting request).
Times are seconds since the epoch, read from ``workflow.now()`` inside the workflow.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = [
    "GpuRegistration",
    "GpuState",
    "Lease",
    "LeaseGrant",
    "LeaseKind",
    "LeaseRelease",
    "LeaseRenewal",
    "LeaseRequest",
    "SchedulerConfig",
    "SchedulerCounters",
    "SchedulerState",
    "Waiting",
]


class LeaseKind(StrEnum):
    """What a lease lets its holder put on the GPU: the text model or the image model."""

    LLM = "llm"  # shared: Ollama runs several requests at once
    IMAGE = "image"  # exclusive: one render at a time


class GpuRegistration(BaseModel):
    """Signal ``register`` of a GPU worker, sent at start, every few seconds, and at stop."""

    gpu: str  # "" is the default GPU (task queue ``storyloom-image``)
    hosts_llm: bool = False  # Ollama runs on this GPU (gpu_sharing = shared)
    worker: str = ""  # the worker's identity (pid@host), for the stats
    leaving: bool = False  # a graceful stop: drop the GPU now, not after gpu_ttl_s
    comfyui_url: str = ""  # where this GPU's jobs run (a render moved off it may adopt them)


class LeaseRequest(BaseModel):
    """Update ``acquire``: ask for (or keep) a lease. Idempotent on ``holder``."""

    holder: str  # "<workflow id>/<step or activity id>": a retried attempt asks again with it
    kind: LeaseKind
    gpu: str | None = None  # None: any GPU (image) or the GPU that hosts the LLM (llm)
    worker: str = ""
    # The asker already occupies the GPU's task slot (a render activity): it goes first, or
    # the GPU would wait for a grant whose render cannot start.
    in_slot: bool = False
    park: bool = True  # False: answer at once, granted or not (the scene's fast path)


class LeaseGrant(BaseModel):
    """Answer of ``acquire``. ``granted`` False: not yet (ask again, with the same holder)."""

    holder: str
    granted: bool = False
    gpu: str | None = None  # the GPU granted; None for an llm lease when no GPU hosts the LLM
    kind: LeaseKind = LeaseKind.IMAGE
    evict: bool = False  # the GPU switched kind: unload the other model before loading yours
    ttl_s: float = 10.0  # renew within this many seconds or lose the lease
    position: int = 0  # place among the waiting requests (0 when granted)
    comfyui_url: str = ""  # the granted GPU's ComfyUI, as its worker registered it


class LeaseRenewal(BaseModel):
    """Signal ``renew``: one per worker process every few seconds, for all the leases it holds
    and all the requests it is waiting for (a dead waiter is forgotten, not granted)."""

    holders: list[str] = Field(default_factory=list)
    evicted: list[str] = Field(default_factory=list)  # holders that finished their eviction
    worker: str = ""


class LeaseRelease(BaseModel):
    """Signal ``release``: the holder is done (or gave up waiting)."""

    holder: str


class SchedulerConfig(BaseModel):
    """The scheduler's bounds; set by the worker that starts it (settings ``STORYLOOM_GPU_*``)."""

    lease_ttl_s: float = 10.0  # a lease not renewed for this long is taken back (killed holder)
    gpu_ttl_s: float = 15.0  # a GPU not registered for this long is dropped (worker gone)
    batch_grants: int = 8  # resident-kind grants allowed once the other kind waits
    batch_window_s: float = 120.0  # ... and for at most this long
    render_depth: int = 2  # image leases per GPU: one rendering, one queued in ComfyUI
    wait_slice_s: float = 20.0  # an ``acquire`` update answers "not yet" after this long
    history_limit: int = 4000  # continue-as-new above this many history events


class Lease(BaseModel):
    holder: str
    kind: LeaseKind
    gpu: str | None = None
    granted_at: float = 0.0
    expires_at: float = 0.0
    worker: str = ""


class Waiting(BaseModel):
    holder: str
    kind: LeaseKind
    gpu: str | None = None  # pinned GPU, or None
    arrived: float = 0.0
    seen: float = 0.0  # last time its holder asked (a dead waiter is forgotten)
    passed: int = 0  # grants to others on its GPU while it waited
    worker: str = ""
    in_slot: bool = False


class GpuState(BaseModel):
    name: str
    hosts_llm: bool = False
    alive: bool = True
    last_seen: float = 0.0
    worker: str = ""
    comfyui_url: str = ""
    resident: LeaseKind | None = None  # the kind whose model is (or may be) loaded
    clean: bool = False  # the other kind's model is known to be unloaded
    batch: int = 0  # resident-kind grants since the other kind began waiting
    other_waiting_since: float | None = None
    switches: int = 0
    grants: dict[str, int] = Field(default_factory=lambda: {"llm": 0, "image": 0})


class SchedulerCounters(BaseModel):
    switches: int = 0
    grants: dict[str, int] = Field(default_factory=lambda: {"llm": 0, "image": 0})
    expired: int = 0
    max_wait_s: float = 0.0
    max_passed: int = 0
    dropped_gpus: int = 0
    runs: int = 1  # continue-as-new generations


class SchedulerState(BaseModel):
    """Everything the scheduler knows; the input of each run (continue-as-new carries it)."""

    config: SchedulerConfig = Field(default_factory=SchedulerConfig)
    gpus: dict[str, GpuState] = Field(default_factory=dict)
    leases: dict[str, Lease] = Field(default_factory=dict)
    waiting: list[Waiting] = Field(default_factory=list)
    counters: SchedulerCounters = Field(default_factory=SchedulerCounters)
