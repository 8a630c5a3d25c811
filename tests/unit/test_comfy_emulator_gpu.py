"""Emulators that share one GPU make contention visible: a render beside a resident LLM fails with
CUDA out of memory as a real ComfyUI reports it, and a cold checkpoint is counted as a load.

Both emulators run in this process, linked by one EmulatedGpu (what `storyloom emulate all
--shared-gpu` does), and are driven over real sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import websockets

from emulators.comfyui import ComfyEmulator
from emulators.gpu import EmulatedGpu
from emulators.ollama import OllamaEmulator
from tests.fixtures.comfy_emulator import collect_frames, txt2img_graph, wait_job_status
from tests.fixtures.common import wait_until
from tests.fixtures.gpu_emulators import gpu_fleet

SCALE = 0.01
MODEL = "llama3.2"


@pytest_asyncio.fixture
async def card(tmp_path: Path) -> AsyncIterator[tuple[OllamaEmulator, ComfyEmulator]]:
    """An Ollama and a ComfyUI emulator on one emulated GPU (checkpoint load: 1 s × SCALE)."""
    async with gpu_fleet(tmp_path, 1, shared=True, time_scale=SCALE,
                         comfy_faults={"checkpoint_load_delay": 1.0}) as fleet:
        yield fleet.ollama, fleet.comfy[0]


async def generate(ollama: OllamaEmulator, **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=ollama.url, timeout=10.0) as http:
        body = {"model": MODEL, "prompt": "Write a scene.", "stream": False, **extra}
        reply = await http.post("/api/generate", json=body)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result


async def render(comfy: ComfyEmulator, seed: int = 1) -> tuple[list[dict[str, Any]], str]:
    """Submit a txt2img graph and collect its frames; returns (frames, prompt_id)."""
    cid = uuid.uuid4().hex
    ws_url = comfy.url.replace("http://", "ws://") + f"/ws?clientId={cid}"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=comfy.url) as http:
        await ws.recv()
        reply = await http.post("/prompt", json={"prompt": txt2img_graph(seed), "client_id": cid})
        reply.raise_for_status()
        pid = reply.json()["prompt_id"]
        return await collect_frames(ws, pid), pid


async def get(url: str, path: str) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        reply = await http.get(path)
        reply.raise_for_status()
        return reply.json()


async def test_render_beside_resident_llm_fails_with_cuda_out_of_memory(
    card: tuple[OllamaEmulator, ComfyEmulator],
) -> None:
    ollama, comfy = card
    await generate(ollama)  # default keep_alive: the model stays resident
    assert (await get(ollama.url, "/api/ps"))["models"]

    frames, pid = await render(comfy)

    kinds = [f["type"] for f in frames]
    assert "execution_success" not in kinds
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert error["exception_type"] == "torch.cuda.OutOfMemoryError"
    assert error["exception_message"].startswith("CUDA out of memory. Tried to allocate")
    assert error["node_type"] == "KSampler" and error["prompt_id"] == pid
    assert error["traceback"] and all(isinstance(line, str) for line in error["traceback"])
    async with httpx.AsyncClient(base_url=comfy.url) as http:
        job = await wait_job_status(http, pid, {"failed"})
    assert job["execution_error"]["exception_type"] == "torch.cuda.OutOfMemoryError"
    history = (await get(comfy.url, f"/history/{pid}"))[pid]
    assert history["status"]["status_str"] == "error"
    assert history["status"]["messages"][-1][0] == "execution_error"
    stats = await get(comfy.url, "/_emulator/stats")
    assert stats["oom_errors"] == 1 and stats["failed"] == 1
    assert stats["gpu"]["shared_with_llm"] is True


async def test_render_after_llm_unload_succeeds_and_pays_one_checkpoint_load(
    card: tuple[OllamaEmulator, ComfyEmulator],
) -> None:
    ollama, comfy = card
    await generate(ollama)
    unload = await generate(ollama, prompt="", keep_alive=0)
    assert unload["done_reason"] == "unload"

    first, _ = await render(comfy, seed=1)
    second, _ = await render(comfy, seed=2)

    assert [f["type"] for f in first].count("execution_success") == 1
    assert [f["type"] for f in second].count("execution_success") == 1
    stats = await get(comfy.url, "/_emulator/stats")
    assert stats["checkpoint_loads"] == 1  # the second render found it resident
    assert stats["resident_checkpoint"] == "v1-5-pruned-emaonly.safetensors"
    assert stats["oom_errors"] == 0 and stats["checkpoint_load_s"] > 0 and stats["busy_s"] > 0
    llm = await get(ollama.url, "/_emulator/stats")
    assert llm["loads"] == 1 and llm["busy_s"] > 0 and llm["vram_conflicts"] == 0


async def test_free_unloads_the_checkpoint_so_the_next_render_loads_it_again(
    card: tuple[OllamaEmulator, ComfyEmulator],
) -> None:
    _, comfy = card
    await render(comfy, seed=1)
    async with httpx.AsyncClient(base_url=comfy.url) as http:
        reply = await http.post("/free", json={"unload_models": True, "free_memory": False})
    assert reply.status_code == 200 and reply.content == b""
    assert (await get(comfy.url, "/_emulator/stats"))["resident_checkpoint"] is None

    frames, _ = await render(comfy, seed=2)

    assert any(f["type"] == "execution_success" for f in frames)
    assert (await get(comfy.url, "/_emulator/stats"))["checkpoint_loads"] == 2


async def test_llm_loaded_during_a_render_is_a_conflict_and_the_render_runs_out_of_memory(
    card: tuple[OllamaEmulator, ComfyEmulator],
) -> None:
    ollama, comfy = card
    comfy.set_faults({"step_delay": 20.0, "checkpoint_load_delay": 1.0})  # 0.2 s per step
    cid = uuid.uuid4().hex
    ws_url = comfy.url.replace("http://", "ws://") + f"/ws?clientId={cid}"
    async with websockets.connect(ws_url) as ws, httpx.AsyncClient(base_url=comfy.url) as http:
        await ws.recv()
        graph = txt2img_graph(7, steps=20)
        pid = (await http.post("/prompt", json={"prompt": graph, "client_id": cid})).json()[
            "prompt_id"]
        while json.loads(await ws.recv())["type"] != "progress":  # the sampler is running
            pass
        await generate(ollama)
        frames = await collect_frames(ws, pid)

    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert error["exception_type"] == "torch.cuda.OutOfMemoryError"
    assert (await get(ollama.url, "/_emulator/stats"))["vram_conflicts"] == 1
    stats = await get(comfy.url, "/_emulator/stats")
    assert stats["oom_errors"] == 1 and stats["resident_checkpoint"] is None


async def test_separate_gpus_render_beside_a_resident_llm(tmp_path: Path) -> None:
    async with gpu_fleet(tmp_path, 2, shared=True, time_scale=SCALE) as fleet:
        await generate(fleet.ollama)  # resident on GPU 0 only
        on_llm_gpu, _ = await render(fleet.comfy[0])
        elsewhere, _ = await render(fleet.comfy[1])
        stats = [c.stats for c in fleet.comfy]
    assert any(f["type"] == "execution_error" for f in on_llm_gpu)
    assert any(f["type"] == "execution_success" for f in elsewhere)
    assert [s["oom_errors"] for s in stats] == [1, 0]
    assert [s["gpu"]["shared_with_llm"] for s in stats] == [True, False]


async def test_comfy_linked_by_url_asks_ollamas_ps_before_it_renders(tmp_path: Path) -> None:
    ollama = OllamaEmulator(time_scale=SCALE)  # as if in another process: only its URL is known
    await ollama.start()
    gpu = EmulatedGpu("gpu0")
    gpu.link_llm_url(ollama.url)
    comfy = ComfyEmulator(tmp_path / "comfy", time_scale=SCALE, gpu=gpu)
    await comfy.start()
    try:
        await generate(ollama)
        beside, _ = await render(comfy, seed=1)
        await generate(ollama, prompt="", keep_alive=0)
        await wait_until(lambda: not ollama.core.models.running(), what="model unloaded")
        alone, _ = await render(comfy, seed=2)
    finally:
        await comfy.stop()
        await ollama.stop()
    error = next(f["data"] for f in beside if f["type"] == "execution_error")
    assert error["exception_type"] == "torch.cuda.OutOfMemoryError"
    assert any(f["type"] == "execution_success" for f in alone)
    assert comfy.stats["oom_errors"] == 1 and comfy.stats["gpu"]["shared_with_llm"] is True


async def test_llm_load_while_comfy_keeps_its_checkpoint_is_counted_until_free(
    card: tuple[OllamaEmulator, ComfyEmulator],
) -> None:
    ollama, comfy = card
    await render(comfy, seed=1)  # the checkpoint stays in VRAM after the prompt
    await generate(ollama)
    await generate(ollama, prompt="", keep_alive=0)
    await wait_until(lambda: not ollama.core.models.running(), what="model unloaded")
    async with httpx.AsyncClient(base_url=comfy.url) as http:
        await http.post("/free", json={"unload_models": True, "free_memory": True})
    await generate(ollama)

    stats = await get(ollama.url, "/_emulator/stats")
    assert stats["loads"] == 2 and stats["loads_beside_checkpoint"] == 1
