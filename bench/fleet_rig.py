"""The fleet benchmark's rig: G emulated GPUs and the workers that serve them, as real processes.

One rig per configuration (a fresh dev server and data directory, so no scheduler state, lease or
cache leaks from one configuration into the next):

* ``storyloom emulate all --gpus G [--shared-gpu]``: one Ollama emulator and G ComfyUI
  emulators; with ``shared`` the Ollama emulator shares GPU 0's card (a render beside a resident
  model fails with CUDA out of memory, emulators/gpu.py).
* one ``storyloom worker --role image`` per GPU, with that GPU's ComfyUI URL: ``--gpu gI`` when
  the GPU scheduler exists (each GPU its own queue); before it, every image worker polls the one
  default image queue, which is how more than one GPU could be served then.
* one ``worker --role llm`` and one ``worker --role db`` (which also run the workflows), both
  pointed at GPU 0's ComfyUI (with the scheduler, the LLM side frees that card with ``/free``).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bench.lab import free_port
from starter.devserver import DevServer, start_dev_server

__all__ = ["Rig", "has_scheduler", "start_rig"]

CLI = [sys.executable, "-m", "starter.cli"]


def has_scheduler() -> bool:
    """True once the GPU scheduler (issue 13, engineer gpusched) is part of the product."""
    policies = importlib.import_module("workflows_temporal.policies")
    return hasattr(policies, "GPU_SCHEDULER_ID")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {log} after {deadline_s:.0f} s")
        await asyncio.sleep(0.1)


@dataclass
class Rig:
    """Running processes of one configuration; ``close()`` stops them all."""

    root: Path
    server: DevServer
    client: Client
    shared: bool
    ollama_url: str
    comfy_urls: list[str]
    emulators: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    burst_began: float = 0.0  # epoch seconds the benchmark started its stories

    @property
    def gpus(self) -> int:
        return len(self.comfy_urls)

    async def set_faults(self, llm: dict[str, Any], comfy: dict[str, Any]) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            (await http.post(self.ollama_url + "/_emulator/faults", json=llm)).raise_for_status()
            for url in self.comfy_urls:
                (await http.post(url + "/_emulator/faults", json=comfy)).raise_for_status()

    async def stats(self) -> dict[str, Any]:
        """{"ollama": its /_emulator/stats, "comfy": [each GPU's /_emulator/stats]}."""
        async with httpx.AsyncClient(timeout=10.0) as http:
            llm = (await http.get(self.ollama_url + "/_emulator/stats")).json()
            comfy = [(await http.get(u + "/_emulator/stats")).json() for u in self.comfy_urls]
        return {"ollama": llm, "comfy": comfy}

    async def render_spans(self) -> list[list[tuple[float, float]]]:
        """Per GPU, (start, end) epoch seconds of every finished prompt, from ``/api/jobs``."""
        spans: list[list[tuple[float, float]]] = []
        async with httpx.AsyncClient(timeout=10.0) as http:
            for url in self.comfy_urls:
                reply = await http.get(url + "/api/jobs", params={
                    "status": "completed,failed", "sort_by": "created_at", "sort_order": "asc"})
                jobs = reply.json()["jobs"]
                spans.append(sorted((j["execution_start_time"] / 1e3, j["execution_end_time"] / 1e3)
                                    for j in jobs if "execution_start_time" in j))
        return spans

    async def scheduler_stats(self) -> dict[str, Any] | None:
        """The GPU scheduler's ``stats`` query, or None when there is no scheduler."""
        if not has_scheduler():
            return None
        policies = importlib.import_module("workflows_temporal.policies")
        try:
            handle = self.client.get_workflow_handle(policies.GPU_SCHEDULER_ID)
            stats: dict[str, Any] = await handle.query("stats")
        except Exception as exc:  # noqa: BLE001 - reported, not fatal: the emulators still count
            return {"error": f"{type(exc).__name__}: {exc}"}
        return stats

    def worker_pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.workers.items() if p.poll() is None}

    async def close(self, *, keep_files: bool = False) -> None:
        """Stop every process; then remove the rig's folder unless ``keep_files`` (its logs
        explain a stalled configuration; the path is printed)."""
        for proc in [*self.workers.values(), self.emulators]:
            await asyncio.to_thread(_stop, proc)
        await asyncio.to_thread(self.server.stop)
        if keep_files:
            print(f"   fleet: logs kept in {self.root / 'data' / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)


async def start_rig(gpus: int, *, shared: bool) -> Rig:
    """Dev server, emulators and workers for ``gpus`` GPUs, every worker ready on return."""
    root = Path(tempfile.mkdtemp(prefix=f"storyloom-fleet-g{gpus}-"))
    data_dir, logs = root / "data", root / "data" / "logs"
    logs.mkdir(parents=True)
    server = await start_dev_server(root / "temporal", address=f"127.0.0.1:{free_port()}",
                                    headless=True)
    ollama_port, comfy_port = free_port(), free_port()
    while any(_taken(comfy_port + i) for i in range(1, gpus)):
        comfy_port = free_port()
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(data_dir),
           "STORYLOOM_TEMPORAL_ADDRESS": server.address, "STORYLOOM_TEMPORAL_NAMESPACE": "default",
           "STORYLOOM_OLLAMA_URL": f"http://127.0.0.1:{ollama_port}", "STORYLOOM_LOG_JSON": "1"}
    for name in ("OLLAMA_HOST", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE",
                 "STORYLOOM_DATABASE_URL", "STORYLOOM_COMFYUI_URL", "STORYLOOM_GPU"):
        env.pop(name, None)
    emulate = ["emulate", "all", "--gpus", str(gpus), "--port", str(ollama_port),
               "--comfy-port", str(comfy_port), "--root", str(root / "comfy")]
    log = logs / "emulators.out"
    emulators = _spawn(emulate + (["--shared-gpu"] if shared else []), env, log)
    comfy_urls = [f"http://127.0.0.1:{comfy_port + i}" for i in range(gpus)]
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    rig = Rig(root, server, client, shared, env["STORYLOOM_OLLAMA_URL"], comfy_urls, emulators)
    try:
        await _wait_for(log, f"listening on {comfy_urls[-1]}", emulators, 60)
        mode = "shared" if shared else "separate"
        scheduled = has_scheduler()
        # the LLM's machine is GPU 0's in shared mode: its worker frees that ComfyUI's VRAM
        plan: list[tuple[str, list[str], dict[str, str]]] = [
            ("llm", ["--role", "llm"], {"STORYLOOM_GPU_SHARING": mode,
                                        "STORYLOOM_COMFYUI_URL": comfy_urls[0]}),
            ("db", ["--role", "db"], {"STORYLOOM_COMFYUI_URL": comfy_urls[0]}),
        ]
        for i, url in enumerate(comfy_urls):
            sharing = "shared" if shared and i == 0 else "separate"
            plan.append((f"image-g{i}", ["--role", "image", *(["--gpu", f"g{i}"] if scheduled
                                                             else [])],
                         {"STORYLOOM_COMFYUI_URL": url, "STORYLOOM_GPU_SHARING": sharing}))
        for name, args, extra in plan:
            rig.workers[name] = _spawn(["worker", *args], {**env, **extra}, logs / f"{name}.out")
        for name, proc in rig.workers.items():
            await _wait_for(logs / f"{name}.out", "worker ready", proc, 120)
    except BaseException:
        await rig.close(keep_files=True)
        raise
    return rig


def _taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
