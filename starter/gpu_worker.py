"""A worker's side of the GPU scheduler (issue 13): its leases, evictions and GPU registration.

``gpu_leases`` builds the process's ``GpuLeases`` with the evictions this machine can do: a GPU
worker whose Ollama shares the GPU (``gpu_sharing=shared``) unloads the LLM before a render; an
LLM worker whose Ollama shares a GPU frees ComfyUI's models before the LLM loads.
``keep_registered`` tells the scheduler every ``gpu_register_every_s`` that this GPU is alive
(signal-with-start: the first GPU worker starts the scheduler) and, at a graceful stop, that it
leaves, so its waiting renders go elsewhere at once. It first refuses (``GpuRefused``) a GPU
that would clash with a live one: the same ComfyUI under another GPU name (one card counted
twice: renders would overlap the LLM and fail out of memory), or a second GPU hosting the LLM.
It registers only while this GPU's ComfyUI answers (``/system_stats``); while it does not, the
GPU says it leaves, so the scheduler sends its renders to other GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from temporalio.client import Client
from temporalio.exceptions import TemporalError

from activities.errors import StoryloomError
from activities.gpu.lease import Evictor, GpuLeases
from starter.clients import comfy_client, ollama_client
from starter.settings import Settings
from workflows_temporal.contracts import GpuSharing
from workflows_temporal.gpu_contracts import GpuRegistration, SchedulerConfig

__all__ = ["GpuRefused", "gpu_leases", "keep_registered", "scheduler_config"]

logger = logging.getLogger("storyloom.gpu")
_QUERY_TIMEOUT_S = 10.0  # a scheduler whose workflow worker is down does not answer queries
_PROBE_TIMEOUT_S = 5.0  # ComfyUI's /system_stats
_PROBE_BACKOFF_MAX_S = 30.0


class GpuRefused(Exception):
    """This GPU must not join the fleet: it clashes with a live GPU (one sentence, with the fix)."""


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


def _same_url(a: str, b: str) -> bool:
    return bool(a) and a.rstrip("/").lower() == b.rstrip("/").lower()


async def _live_gpus(leases: GpuLeases) -> dict[str, Any]:
    """The scheduler's live GPUs (its ``stats`` query); {} when it does not run or answer."""
    handle = leases.client.get_workflow_handle(leases.scheduler_id)
    try:
        stats = await asyncio.wait_for(handle.query("stats"), _QUERY_TIMEOUT_S)
    except (TemporalError, TimeoutError) as exc:
        logger.info("GPU scheduler stats not available (%s): no GPU to compare with", exc)
        return {}
    gpus = stats.get("gpus", {}) if isinstance(stats, dict) else {}
    return {name: g for name, g in gpus.items() if isinstance(g, dict) and g.get("alive")}


def clash(gpu: str, comfyui_url: str, hosts_llm: bool, live: dict[str, Any]) -> str | None:
    """Why GPU ``gpu`` must not join next to the ``live`` GPUs (stats rows), or None."""
    for name, other in sorted(live.items()):
        if name == gpu:
            continue
        if _same_url(comfyui_url, str(other.get("comfyui_url", ""))):
            return (f"GPU {gpu!r} refused: its ComfyUI {comfyui_url} is already registered as "
                    f"GPU {name!r} (one card under two names would render while the LLM is "
                    f"loaded and fail out of memory); start this worker with --gpu {name!r} "
                    "or point STORYLOOM_COMFYUI_URL at another ComfyUI")
        if hosts_llm and other.get("hosts_llm"):
            return (f"GPU {gpu!r} refused: STORYLOOM_GPU_SHARING=shared says the LLM runs on "
                    f"this GPU, but GPU {name!r} already hosts it; set "
                    "STORYLOOM_GPU_SHARING=separate for this worker (one GPU hosts the LLM)")
    return None


async def _refuse_a_clash(leases: GpuLeases, reg: GpuRegistration) -> None:
    why = clash(reg.gpu, reg.comfyui_url, reg.hosts_llm, await _live_gpus(leases))
    if why is not None:
        raise GpuRefused(why)


async def _comfy_answers(comfy: Any) -> bool:
    try:
        await asyncio.wait_for(comfy.system_stats(), _PROBE_TIMEOUT_S)
    except (StoryloomError, TimeoutError, OSError):
        return False
    return True


async def _register(leases: GpuLeases, reg: GpuRegistration) -> None:
    try:
        await leases.ensure_scheduler(signal="register", arg=reg)
    except TemporalError as exc:
        logger.warning("GPU %r: registration with the scheduler failed (%s); trying again",
                       reg.gpu, exc)


async def keep_registered(
    leases: GpuLeases, settings: Settings, gpu: str, stop: asyncio.Event
) -> None:
    """Register ``gpu`` while its ComfyUI answers, every ``gpu_register_every_s``, until
    ``stop``; then leave. Raises GpuRefused when ``gpu`` clashes with a live GPU (see module)."""
    reg = GpuRegistration(gpu=gpu, hosts_llm=settings.gpu_sharing == GpuSharing.SHARED,
                          worker=leases.worker, comfyui_url=settings.comfyui_url)
    await _refuse_a_clash(leases, reg)  # at once: a misconfigured worker exits before polling
    comfy = comfy_client(settings)
    registered = False
    wait_s = settings.gpu_register_every_s
    try:
        while not stop.is_set():
            if await _comfy_answers(comfy):
                if not registered:  # again: another GPU may have joined while ComfyUI was away
                    await _refuse_a_clash(leases, reg)
                await _register(leases, reg)
                if not registered:
                    logger.info("GPU %r registered with the scheduler (hosts the LLM: %s)",
                                gpu, reg.hosts_llm)
                registered, wait_s = True, settings.gpu_register_every_s
            else:
                if registered:
                    await _register(leases, reg.model_copy(update={"leaving": True}))
                if registered or wait_s == settings.gpu_register_every_s:
                    logger.warning(
                        "GPU %r not registered with the scheduler: its ComfyUI at %s does not "
                        "answer (start it or fix STORYLOOM_COMFYUI_URL); renders go to other "
                        "GPUs; trying again with back-off", gpu, settings.comfyui_url)
                registered = False
                wait_s = min(wait_s * 2, max(_PROBE_BACKOFF_MAX_S, settings.gpu_register_every_s))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
        if registered:
            await _register(leases, reg.model_copy(update={"leaving": True}))
    finally:
        await comfy.aclose()
