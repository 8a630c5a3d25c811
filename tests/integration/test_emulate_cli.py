"""`storyloom emulate all`: both emulators in the foreground, URLs printed, Ctrl-C stops them."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

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
