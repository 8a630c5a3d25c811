"""The emulated card's memory as ComfyUI sees it: checkpoint residency, its load time, `/free`,
and the out-of-memory error when a linked Ollama emulator holds a model on the same card.

Real ComfyUI keeps the last checkpoint in VRAM between prompts, moves it in when a sampler or VAE
node needs it (seconds for SDXL), drops it on `POST /free` (acted on between prompts) and after an
out-of-memory error ("Got an OOM, unloading all loaded models."). The OOM itself is the
emulator's model of a 12-24 GB card that cannot hold an SDXL render beside a loaded 8B LLM
(see emulators/gpu.py): a real ComfyUI has no link to Ollama, it simply runs out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from emulators.comfyui.core import Core
from emulators.comfyui.nodes import NodeFailure
from emulators.comfyui.values import Model

__all__ = ["GPU_NODES", "OOM_TYPE", "apply_free", "check_memory", "prepare_gpu_node", "request_free"]

GPU_NODES = frozenset({"KSampler", "VAEDecode", "VAEEncode"})
OOM_TYPE = "torch.cuda.OutOfMemoryError"
_TIPS = ("This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked "
         "before you might have accidentally set the batch_size to a large number.")
# Frame names as a real OOM traceback shows them; the code lines are the emulator's own.
_TRACEBACK = [
    f'  File "<emulated ComfyUI>/{where}", line 1, in {func}\n    (emulated: {what})\n'
    for where, func, what in (
        ("execution.py", "execute", "the node runs"),
        ("comfy/model_management.py", "load_models_gpu", "the checkpoint moves to the GPU"),
        ("comfy/model_patcher.py", "load", "weights are copied to the device"),
        ("torch/cuda/memory.py", "caching_allocator_alloc", "the allocation fails"),
    )
]


def _oom_message(class_type: str) -> str:
    tried = "2.50 GiB" if class_type == "KSampler" else "1.25 GiB"
    return (
        f"CUDA out of memory. Tried to allocate {tried}. GPU 0 has a total capacity of 11.72 GiB "
        "of which 1.06 GiB is free. Including non-PyTorch memory, this process has 4.91 GiB "
        "memory in use. Of the allocated memory 4.52 GiB is allocated by PyTorch, and 201.37 MiB "
        "is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try "
        "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
        "documentation for Memory Management  "
        "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)\n" + _TIPS
    )


async def check_memory(core: Core, class_type: str) -> None:
    """Raise the OOM NodeFailure if the card's LLM holds memory; the checkpoint is then dropped."""
    if not await core.gpu.llm_resident():
        return
    core.stats["oom_errors"] += 1
    core.resident_checkpoint = None  # the server unloads every model after an OOM
    raise NodeFailure(OOM_TYPE, _oom_message(class_type), list(_TRACEBACK))


async def prepare_gpu_node(core: Core, class_type: str, inputs: dict[str, Any]) -> None:
    """Before a sampler/VAE node: fail if the card is full, else load its checkpoint if cold."""
    if class_type not in GPU_NODES:
        return
    await check_memory(core, class_type)
    model = inputs.get("model") or inputs.get("vae")
    ckpt = model.ckpt if isinstance(model, Model) else None
    if ckpt is None or core.resident_checkpoint == ckpt:
        return
    began = time.monotonic()
    delay = core.faults.checkpoint_load_delay * core.time_scale
    if delay > 0:
        await asyncio.sleep(delay)
    core.stats["checkpoint_loads"] += 1
    core.stats["checkpoint_load_s"] = round(
        core.stats["checkpoint_load_s"] + time.monotonic() - began, 4)
    core.resident_checkpoint = ckpt
    await check_memory(core, class_type)  # the LLM may have loaded meanwhile


def request_free(core: Core, body: Any) -> None:
    """`POST /free`: flags the worker acts on between prompts (at once when idle)."""
    flags = body if isinstance(body, dict) else {}
    free_memory = bool(flags.get("free_memory", False))
    wanted = {"unload_models": bool(flags.get("unload_models", free_memory)),
              "free_memory": free_memory}
    if core.free_flags is not None:
        wanted = {k: v or core.free_flags[k] for k, v in wanted.items()}
    core.free_flags = wanted
    if core.ledger.running is None:
        apply_free(core)


def apply_free(core: Core) -> None:
    """Act on a pending `/free`: unload the checkpoint and/or drop the node output cache."""
    flags, core.free_flags = core.free_flags, None
    if flags is None:
        return
    if flags["unload_models"]:
        core.resident_checkpoint = None
    if flags["free_memory"]:
        core.cache.clear()
