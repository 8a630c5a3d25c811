"""A worker's side of the GPU scheduler (issue 13): its leases, evictions and GPU registration.

``gpu_leases`` builds the process's ``GpuLeases`` with the evictions this machine can do: a GPU
worker whose Ollama shares the GPU (``gpu_sharing=shared``) unloads the LLM before a render; an
LLM worker whose Ollama shares a GPU frees ComfyUI's models before the LLM loads.
``keep_registered`` tells the scheduler every ``gpu_register_every_s`` that this GPU is alive
(signal-with-start: the first GPU worker starts the scheduler) and, at a graceful stop, that it
leaves, so its waiting renders go elsewhere at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.client import Client
from temporalio.exceptions import TemporalError

from activities.gpu.lease import Evictor, GpuLeases
from starter.clients import comfy_client, ollama_client
from starter.settings import Settings
from workflows_temporal.contracts import GpuSharing
from workflows_temporal.gpu_contracts import GpuRegistration, SchedulerConfig

__all__ = ["gpu_leases", "keep_registered", "scheduler_config"]

logger = logging.getLogger("storyloom.gpu")


def scheduler_config(settings: Settings) -> SchedulerConfig:
    return SchedulerConfig(
        lease_ttl_s=settings.gpu_lease_ttl_s, gpu_ttl_s=settings.gpu_ttl_s,
        batch_grants=settings.gpu_batch_grants, batch_window_s=settings.gpu_batch_window_s,
        render_depth=settings.gpu_render_depth,
    )


def gpu_leases(
    settings: Settings, client: Client, *, llm: bool, image: bool,
    closers: list[object],
) -> GpuLeases:
    """The process's leases; clients it opens for evictions are appended to ``closers``."""
    shared = settings.gpu_sharing == GpuSharing.SHARED
    evict_llm: Evictor | None = None
    evict_image: Evictor | None = None
    if shared and image:
        ollama = ollama_client(settings)
        closers.append(ollama.aclose)

        async def unload_llm() -> None:
            for model in await ollama.loaded_models():
                await ollama.unload(model.full_name)

        evict_llm = unload_llm
    if shared and llm:
        comfy = comfy_client(settings)
        closers.append(comfy.aclose)

        async def free_comfy() -> None:
            await comfy.free(unload_models=True, free_memory=True)

        evict_image = free_comfy
    leases = GpuLeases(client, config=scheduler_config(settings), evict_llm=evict_llm,
                       evict_image=evict_image)
    closers.append(leases.aclose)
    return leases


async def _register(leases: GpuLeases, reg: GpuRegistration) -> None:
    try:
        await leases.ensure_scheduler(signal="register", arg=reg)
    except TemporalError as exc:
        logger.warning("GPU %r: registration with the scheduler failed (%s); trying again",
                       reg.gpu, exc)


async def keep_registered(
    leases: GpuLeases, settings: Settings, gpu: str, stop: asyncio.Event
) -> None:
    """Register ``gpu`` now and every ``gpu_register_every_s`` until ``stop``; then leave."""
    reg = GpuRegistration(gpu=gpu, hosts_llm=settings.gpu_sharing == GpuSharing.SHARED,
                          worker=leases.worker, comfyui_url=settings.comfyui_url)
    await _register(leases, reg)
    logger.info("GPU %r registered with the scheduler (hosts the LLM: %s)", gpu, reg.hosts_llm)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.gpu_register_every_s)
        if not stop.is_set():
            await _register(leases, reg)
    await _register(leases, reg.model_copy(update={"leaving": True}))
