"""Run the Temporal workers of one role (llm, image, db or all) until SIGTERM/SIGINT.

Every worker process also runs the workflows (SceneWorkflow) on SCENE_WORKFLOW_QUEUE; activity
queues come from ``policies.queues_for_role``. The image queue runs one activity at a time: one
GPU, one job (ARCHITECTURE rule 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from starter.clients import comfy_client, ollama_client
from starter.settings import Settings
from starter.temporal_client import connect
from workflows_temporal.contracts import GpuSharing
from workflows_temporal.policies import (
    DB_QUEUE,
    LEASE_QUEUE,
    LLM_QUEUE,
    SCENE_WORKFLOW_QUEUE,
    image_queue,
    queues_for_role,
)

__all__ = ["ActivitySet", "build_activities", "build_workers", "run_worker"]

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=5)
HEARTBEAT_THROTTLE = timedelta(seconds=1)


@dataclass
class ActivitySet:
    """Activity callables per task queue, and the closers of the clients they hold."""

    by_queue: dict[str, list[Callable[..., Any]]] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    leases: Any = None  # the process's GpuLeases, when it talks to the GPU scheduler
    local: list[Callable[..., Any]] = field(default_factory=list)  # local activities

    async def aclose(self) -> None:
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:  # a failing close must not hide the others
                logger.exception("closing a client failed")


async def _open_store(settings: Settings, acts: ActivitySet) -> Any:
    """Upgrade the schema, open the store; its close joins the set's closers."""
    from activities.store.db import open_store, upgrade

    url = settings.effective_database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(url)
    store = await open_store(url)
    acts.closers.append(store.close)
    return store


async def build_activities(
    settings: Settings, role: str, gpu: str = "", client: Client | None = None
) -> ActivitySet:
    """Clients and activity objects for ``role``; the database is upgraded first (db roles).
    With ``client``, the GPU scheduler's leases (issue 13) guard the LLM and render activities
    and every role serves ``acquire_gpu``."""
    acts = ActivitySet()
    queues = queues_for_role(role, gpu)
    img_queue = image_queue(gpu)
    store: Any = None
    leases: Any = None
    if client is not None:
        from activities.gpu.activities import LeaseActivities
        from starter.gpu_worker import gpu_leases

        leases = gpu_leases(settings, client, llm=LLM_QUEUE in queues,
                            image=img_queue in queues, closers=acts.closers)  # type: ignore[arg-type]
        acts.leases = leases
        lease_acts = LeaseActivities(leases)
        acts.by_queue[LEASE_QUEUE] = [lease_acts.acquire_gpu]
        acts.local = [lease_acts.try_gpu]  # the scenes' fast path, beside the workflows
    shares_gpu = settings.gpu_sharing == GpuSharing.SHARED
    if DB_QUEUE in queues or img_queue in queues:  # the render lease lives in the database too
        store = await _open_store(settings, acts)
    if DB_QUEUE in queues:
        from activities.store.activities import StoreActivities

        where = settings.effective_database_url.rpartition("@")[2]  # never log a password
        db = StoreActivities(store.repo, where=where)
        acts.by_queue[DB_QUEUE] = [db.load_context, db.save_node, db.upsert_characters,
                                   db.attach_image]
        acts.by_queue[DB_QUEUE].append(db.load_image_params)  # RetryImageWorkflow
        from activities.store.memory import MemoryActivities

        memory = MemoryActivities(store.sessions, where=where)
        acts.by_queue[DB_QUEUE] += [memory.store_embedding, memory.recall_memories]
    if LLM_QUEUE in queues:
        from activities.ollama.activities import LlmActivities

        ollama = ollama_client(settings)
        acts.closers.append(ollama.aclose)
        llm_leases = leases if shares_gpu else None  # Ollama on its own GPU needs no lease
        llm = LlmActivities(ollama, fallback_models=list(settings.fallback_models),
                            gpu_leases=llm_leases)
        acts.by_queue[LLM_QUEUE] = [llm.write_scene, llm.extract_cast, llm.free_llm_vram]
        from activities.ollama.embedding import EmbedActivities

        acts.by_queue[LLM_QUEUE].append(EmbedActivities(ollama, llm_leases).embed_texts)
    if img_queue in queues:
        from activities.comfyui.activities import ImageActivities
        from activities.store.repository import RenderLease
        from activities.templates import WorkflowManager

        comfy = comfy_client(settings)
        acts.closers.append(comfy.aclose)
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        image = ImageActivities(comfy, WorkflowManager(), settings.media_dir,
                                lease=RenderLease(store.repo), gpu_leases=leases, gpu=gpu)
        acts.by_queue[img_queue] = [image.render]
    return acts


def build_workers(client: Client, acts: ActivitySet, gpu: str = "", *,
                  identity: str | None = None, render_slots: int = 1) -> list[Worker]:
    """One Worker per queue: the workflow queue plus each activity queue of the role.
    ``identity``: what pollers show in DescribeTaskQueue (``pollers.worker_identity``)."""
    from workflows_temporal.gpu_scheduler import GpuSchedulerWorkflow
    from workflows_temporal.retry_image import RetryImageWorkflow
    from workflows_temporal.scene import SceneWorkflow
    from workflows_temporal.story import StoryWorkflow

    workers = [
        Worker(
            client, task_queue=SCENE_WORKFLOW_QUEUE,
            workflows=[SceneWorkflow, StoryWorkflow, RetryImageWorkflow, GpuSchedulerWorkflow],
            activities=acts.local, graceful_shutdown_timeout=GRACEFUL_SHUTDOWN, identity=identity,
        )
    ]
    for queue, activities in acts.by_queue.items():
        one_gpu = queue == image_queue(gpu)
        # Waiting for a GPU grant holds nothing: many stories may wait at once.
        # Renders: the GPU scheduler's render depth when it runs (its leases keep the LLM off
        # the GPU and ComfyUI runs one prompt at a time), else one.
        slots = render_slots if one_gpu else 500 if queue == LEASE_QUEUE else 20
        workers.append(
            Worker(
                client, task_queue=queue, activities=activities,
                max_concurrent_activities=slots,
                graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                # Progress (tokens, sampler step) reaches `scene`/`watch` through heartbeat
                # details: send them at most every second instead of 80% of the timeout.
                max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
                default_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
                identity=identity,
            )
        )
    return workers


async def run_worker(
    settings: Settings,
    role: str = "all",
    *,
    gpu: str | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[list[str]], None] | None = None,
) -> None:
    """Poll the role's queues until ``stop`` is set or SIGTERM/SIGINT arrives, then drain.

    Raises ValueError for an unknown role and TemporalUnreachable when Temporal does not answer.
    """
    gpu = settings.gpu if gpu is None else gpu
    queues_for_role(role, gpu)  # validates the role before anything is started
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    from starter.metrics import serve_metrics

    metrics = await serve_metrics(settings)  # None when STORYLOOM_METRICS_PORT is 0
    try:
        client = await connect(settings, **(metrics.client_options() if metrics else {}))
    except BaseException:
        if metrics is not None:
            await metrics.close()
        raise
    acts = await build_activities(settings, role, gpu, client)
    try:
        from starter.pollers import worker_identity
        from starter.service_urls import shown_url

        identity = worker_identity(str(settings.data_dir), settings.store_label,
                                   ollama_url=shown_url(settings.ollama_url),
                                   comfyui_url=shown_url(settings.comfyui_url))
        workers = build_workers(client, acts, gpu, identity=identity,
                                render_slots=max(1, settings.gpu_render_depth))
        tasks = [asyncio.create_task(w.run(), name=f"worker {w.task_queue}") for w in workers]
        if image_queue(gpu) in queues_for_role(role, gpu):  # this process serves a GPU
            from starter.gpu_worker import keep_registered

            tasks.append(asyncio.create_task(keep_registered(acts.leases, settings, gpu, stop),
                                             name=f"register GPU {gpu!r}"))
        queues = [w.task_queue for w in workers]
        logger.info("worker ready: role %s polling %s on %s", role, ", ".join(queues),
                    settings.temporal_address)
        if on_ready is not None:
            on_ready(queues)
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        logger.info("worker stopping: draining running activities (up to %ss)",
                    GRACEFUL_SHUTDOWN.total_seconds())
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        stop.set()  # the GPU registration (if any) says "leaving" and ends
        await asyncio.wait(tasks, timeout=GRACEFUL_SHUTDOWN.total_seconds())
        stopper.cancel()
        for task in tasks:
            if task in done and (error := task.exception()) is not None:
                raise error
    finally:
        await acts.aclose()
        if metrics is not None:
            await metrics.close()
        for handled in installed:
            loop.remove_signal_handler(handled)
