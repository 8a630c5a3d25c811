"""`storyloom emulate all`: both emulators in the foreground, URLs printed, Ctrl-C stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from tests.fixtures.comfy_emulator import txt2img_graph, wait_job_status
from tests.fixtures.common import free_port, wait_until
from tests.fixtures.processes import answers, spawn

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


async def test_emulate_all_prints_both_urls_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    ollama_port, comfy_port = free_port(), free_port()
    out = tmp_path / "emulate.out"
    proc = spawn(["emulate", "all", "--port", str(ollama_port), "--comfy-port", str(comfy_port),
                  "--root", str(tmp_path / "comfy")], dict(os.environ), out)
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    comfy_url = f"http://127.0.0.1:{comfy_port}"
    try:
        await wait_until(lambda: f"EMULATED comfyui listening on {comfy_url}" in out.read_text(),
                         timeout=30,
                         what="both emulator URLs on stdout")
        printed = out.read_text()
        assert f"EMULATED ollama listening on {ollama_url}" in printed
        assert f"EMULATED comfyui listening on {comfy_url}" in printed
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(ollama_url + "/api/version")).json()["version"]
            stats = (await http.get(comfy_url + "/system_stats")).json()
            assert stats["system"]["comfyui_version"] == "0.33.0"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = await asyncio.to_thread(proc.wait, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, out.read_text()[-2000:]
    assert "Traceback" not in out.read_text()
    assert not await answers(ollama_url + "/api/version")
    assert not await answers(comfy_url + "/system_stats")


async def test_emulate_all_shared_gpu_runs_out_of_memory_only_on_the_llms_gpu(
    tmp_path: Path,
) -> None:
    ollama_port, comfy_port = free_port(), free_port()
    out = tmp_path / "emulate.out"
    proc = spawn(["emulate", "all", "--shared-gpu", "--gpus", "2", "--time-scale", "0.01",
                  "--checkpoint-load-delay", "3", "--port", str(ollama_port),
                  "--comfy-port", str(comfy_port), "--root", str(tmp_path / "comfy")],
                 dict(os.environ), out)
    ollama_url = f"http://127.0.0.1:{ollama_port}"
    gpu0, gpu1 = f"http://127.0.0.1:{comfy_port}", f"http://127.0.0.1:{comfy_port + 1}"
    try:
        await wait_until(lambda: f"listening on {gpu1} (gpu1)" in out.read_text(), timeout=30,
                         what="the second GPU's URL on stdout")
        assert f"EMULATED comfyui listening on {gpu0} (gpu0)" in out.read_text()
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(ollama_url + "/api/generate", json={
                "model": "llama3.2", "prompt": "A scene.", "stream": False})
            assert reply.status_code == 200  # the model stays resident (keep_alive 5m)
            statuses = {}
            for url in (gpu0, gpu1):
                pid = str(uuid.uuid4())
                async with httpx.AsyncClient(base_url=url, timeout=10) as comfy:
                    posted = await comfy.post("/prompt", json={
                        "prompt": txt2img_graph(3), "prompt_id": pid})
                    assert posted.status_code == 200, posted.text
                    statuses[url] = await wait_job_status(comfy, pid, {"completed", "failed"},
                                                          timeout=20)
            stats0 = (await http.get(gpu0 + "/_emulator/stats")).json()
            stats1 = (await http.get(gpu1 + "/_emulator/stats")).json()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 15)
    assert statuses[gpu0]["status"] == "failed"
    assert statuses[gpu0]["execution_error"]["exception_type"] == "torch.cuda.OutOfMemoryError"
    assert statuses[gpu1]["status"] == "completed"
    assert stats0["oom_errors"] == 1 and stats0["gpu"]["shared_with_llm"] is True
    assert stats1["checkpoint_loads"] == 1 and stats1["gpu"] == {
        "name": "gpu1", "shared_with_llm": False, "busy_s": stats1["gpu"]["busy_s"]}
