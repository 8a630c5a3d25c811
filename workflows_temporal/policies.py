"""Task queues, timeouts and retry policies: one place, named per step (ARCHITECTURE rule 1-2).

Workers and starters import the queue names from here; workflows import the step options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from temporalio.common import RetryPolicy

__all__ = [
    "DB_QUEUE",
    "GPU_SCHEDULER_ID",
    "IMAGE_QUEUE",
    "LEASE_QUEUE",
    "LLM_QUEUE",
    "NON_RETRYABLE_TYPES",
    "RENDER_CANCEL_CONFIRM",
    "ROLES",
    "SCENE_WORKFLOW_QUEUE",
    "STEPS",
    "WORKFLOW_FAILURE_TYPES",
    "StepPolicy",
    "check_gpu_name",
    "image_queue",
    "queues_for_role",
]

SCENE_WORKFLOW_QUEUE = "storyloom-workflows"
LLM_QUEUE = "storyloom-llm"
DB_QUEUE = "storyloom-db"
IMAGE_QUEUE = "storyloom-image"  # the default GPU; one queue per GPU, concurrency 1
ROLES = ("llm", "image", "db", "all")
# Issue 13: the one workflow that owns every GPU, and the queue of the activity that waits for
# its grants (served by every worker: waiting holds no GPU and no LLM slot).
GPU_SCHEDULER_ID = "storyloom-gpu-scheduler"
LEASE_QUEUE = "storyloom-gpu-leases"
# A render granted to a GPU whose worker is gone waits this long in that GPU's queue before the
# scene asks the scheduler for another GPU (a bit more than the scheduler's gpu_ttl_s).
RENDER_PICKUP = timedelta(seconds=30)
# The scene's fast path to a GPU grant (local activity ``try_gpu``: one update, no waiting).
TRY_GPU_TIMEOUT = timedelta(seconds=5)

# Error types that no retry can fix (ApplicationError type = class name in activities/errors.py).
NON_RETRYABLE_TYPES = [
    "BadRequest",
    "ModelNotFound",
    "StructuredOutputError",
    "EmptyAnswer",
    "OutputMissing",
    "ComfyValidationError",
    "ComfyExecutionError",
    "JobCancelled",
    "TemplateError",
    "StoreError",
]

# Exceptions that fail the *workflow* (with their message) instead of its workflow task. A
# task failure is retried forever (a stuck run that even a cancel cannot end); an input that
# does not validate against its contract (pydantic) will never validate on a retry.
WORKFLOW_FAILURE_TYPES: list[type[BaseException]] = [ValidationError]


_GPU_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")


def check_gpu_name(gpu: str) -> str:
    """``gpu`` when it is a valid GPU name ("" or ``[A-Za-z0-9_.-]{1,40}``); ValueError else."""
    if gpu and not _GPU_NAME.fullmatch(gpu):
        raise ValueError(f"GPU name {gpu!r} is not allowed: use 1 to 40 letters, digits, "
                         "'_', '.' or '-' (it names the task queue storyloom-image-NAME)")
    return gpu


def image_queue(gpu: str = "") -> str:
    """The task queue of one GPU; ``""`` is the default GPU."""
    return f"{IMAGE_QUEUE}-{gpu}" if gpu else IMAGE_QUEUE


def queues_for_role(role: str, gpu: str = "") -> list[str]:
    """Which activity queues a worker of ``role`` polls (workflows run on every worker)."""
    table = {"llm": [LLM_QUEUE], "image": [image_queue(gpu)], "db": [DB_QUEUE]}
    if role == "all":
        return [LLM_QUEUE, image_queue(gpu), DB_QUEUE]
    if role not in table:
        raise ValueError(f"unknown worker role {role!r}; choose one of {', '.join(ROLES)}")
    return table[role]


@dataclass(frozen=True)
class StepPolicy:
    """How one step runs: its queue, timeouts and retries."""

    task_queue: str
    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None
    schedule_to_close: timedelta | None = None


def _retry(attempts: int, initial_s: float = 1.0, max_s: float = 30.0) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=initial_s),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=max_s),
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE_TYPES,
    )


# Ollama sends nothing until the first token, and a cold load can take minutes: write_scene's
# start-to-close covers a cold load plus generation; its heartbeat timeout is short because the
# activity heartbeats on a timer while it waits, not only per token.
# Outside services get a budget of minutes, not attempts: a flaky Ollama or ComfyUI (503s, broken
# streams, a restart) is ridden out. 10 attempts at 2 s doubling to 60 s retry for about 5 min;
# the chaos test showed that 4 attempts are used up by four short fault windows in 15 s.
_SERVICE_RETRY = _retry(10, 2.0, 60.0)

# How long a cancelled render waits (heartbeating) for ComfyUI to confirm the interrupt. An
# interrupt lands at the next node boundary (protocol §5), so it must outlast the slowest node
# (a checkpoint load, a big VAE decode, an upscale), not only the heartbeat timeout.
RENDER_CANCEL_CONFIRM = timedelta(minutes=5)

STEPS: dict[str, StepPolicy] = {
    "load_context": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(5)),
    "write_scene": StepPolicy(
        LLM_QUEUE, timedelta(minutes=15), _SERVICE_RETRY, heartbeat=timedelta(seconds=10)
    ),
    "save_node": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(10)),
    "extract_cast": StepPolicy(
        LLM_QUEUE, timedelta(minutes=10), _SERVICE_RETRY, heartbeat=timedelta(seconds=10)
    ),
    "upsert_characters": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(10)),
    # Every LLM activity heartbeats on a timer (activities/heartbeat.py), so a heartbeat timeout
    # notices a dead worker in seconds and never fires on a slow but live model.
    "free_llm_vram": StepPolicy(
        LLM_QUEUE, timedelta(seconds=60), _retry(3), heartbeat=timedelta(seconds=10)
    ),
    "render": StepPolicy(
        IMAGE_QUEUE,
        timedelta(minutes=30),
        _SERVICE_RETRY,
        heartbeat=timedelta(seconds=10),
        schedule_to_close=timedelta(hours=2),
    ),
    "attach_image": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(10)),
    # Issue 13: wait for a GPU grant. Waiting is normal (other stories render): hours, heartbeats.
    "acquire_gpu": StepPolicy(
        LEASE_QUEUE, timedelta(hours=2), _retry(0, 1.0, 10.0), heartbeat=timedelta(seconds=10)
    ),
    # RetryImageWorkflow (issue 5): what a node's image was made from.
    "load_image_params": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(5)),
    # Story memory (issue 6): optional steps, so few attempts; a failure never fails a scene.
    # Heartbeats: with a shared GPU it may wait for an llm lease while other stories render.
    "embed_texts": StepPolicy(
        LLM_QUEUE, timedelta(minutes=15), _retry(3, 2.0, 30.0), heartbeat=timedelta(seconds=10)
    ),
    "store_embedding": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(5)),
    "recall_memories": StepPolicy(DB_QUEUE, timedelta(seconds=30), _retry(5)),
}
