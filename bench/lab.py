"""The benchmark lab: one dev server, both emulators and a worker, as real processes.

One ``Lab`` is shared by every benchmark of a run (``get_lab()``; ``close_lab()`` at the end),
so ratios are taken on the same server, emulators and database. The worker is a subprocess
(``storyloom worker --role all``) that benchmarks may kill, stop and start again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from starter.devserver import DevServer, start_dev_server
from starter.emulate import EmulatorProcess, spawn_emulator
from starter.settings import Settings
from workflows_temporal.contracts import GpuSharing, SceneRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

__all__ = ["Lab", "close_lab", "cpu_s", "free_port", "get_lab", "rss_mb"]

CLI = [sys.executable, "-m", "starter.cli"]
MODEL = "llama3.2"
TEMPLATE = "scene"
DIRECTION = "A lighthouse keeper finds a talking fox"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc (VmRSS, VmHWM)."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Lab:
    """Running services for one benchmark run. Not safe to share across event loops."""

    root: Path
    server: DevServer
    client: Client
    ollama: EmulatorProcess
    comfy: EmulatorProcess
    settings: Settings
    env: dict[str, str]
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None
    _http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10.0))

    # ---- emulator delays -------------------------------------------------------------------

    async def llm_faults(self, **faults: Any) -> None:
        """Replace the Ollama emulator's faults (prompt_delay, token_delay, ... in seconds)."""
        reply = await self._http.post(self.ollama.url + "/_emulator/faults", json=faults)
        reply.raise_for_status()

    async def comfy_faults(self, **faults: Any) -> None:
        """Replace the ComfyUI emulator's faults (step_delay per sampler step, node_delay)."""
        reply = await self._http.post(self.comfy.url + "/_emulator/faults", json=faults)
        reply.raise_for_status()

    async def comfy_job(self, prompt_id: str) -> dict[str, Any]:
        reply = await self._http.get(f"{self.comfy.url}/api/jobs/{prompt_id}")
        reply.raise_for_status()
        return dict(reply.json())

    async def comfy_stats(self) -> dict[str, Any]:
        reply = await self._http.get(self.comfy.url + "/_emulator/stats")
        reply.raise_for_status()
        return dict(reply.json())

    def pids(self) -> dict[str, int]:
        """Process ids of the lab's processes, by role."""
        found = {"ollama": self.ollama.process.pid, "comfyui": self.comfy.process.pid}
        if self.server.process is not None:
            found["temporal"] = self.server.process.pid
        if self.worker is not None:
            found["worker"] = self.worker.pid
        return found

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each lab process (diff two readings for a phase)."""
        return {role: cpu_s(pid) for role, pid in self.pids().items()}

    # ---- the worker --------------------------------------------------------------------------

    async def start_worker(self, deadline_s: float = 60.0) -> subprocess.Popen[bytes]:
        """Start ``storyloom worker --role all`` and wait for its "worker ready" log line."""
        if self.worker is not None and self.worker.poll() is None:
            return self.worker
        log = self.root / "logs" / f"worker-{uuid.uuid4().hex[:6]}.log"
        proc = _spawn([*CLI, "worker", "--role", "all"], self.env, log)
        self.worker, self.worker_log = proc, log
        deadline = time.monotonic() + deadline_s
        while "worker ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {deadline_s:.0f} s; see {log}")
            await asyncio.sleep(0.05)
        return proc

    async def stop_worker(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL after 15 s."""
        proc, self.worker = self.worker, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)

    def kill_worker(self) -> None:
        """kill -9, as a crash would."""
        proc, self.worker = self.worker, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    # ---- scenes ------------------------------------------------------------------------------

    def request(self, *, illustrate: bool = True) -> SceneRequest:
        return SceneRequest(direction=DIRECTION, model=MODEL, template=TEMPLATE,
                            illustrate=illustrate, gpu_sharing=GpuSharing.SHARED)

    async def start_scene(self, request: SceneRequest | None = None) -> Any:
        """Start a SceneWorkflow the way ``storyloom scene`` does; returns its handle."""
        return await self.client.start_workflow(
            "SceneWorkflow", request or self.request(), id=f"bench-{uuid.uuid4()}",
            task_queue=SCENE_WORKFLOW_QUEUE, result_type=SceneResult,
            static_summary="bench scene",
        )

    async def run_scene(self, request: SceneRequest | None = None) -> SceneResult:
        handle = await self.start_scene(request)
        result: SceneResult = await handle.result()
        return result

    async def close(self) -> None:
        await self.stop_worker()
        await self._http.aclose()
        for emulator in (self.ollama, self.comfy):
            await asyncio.to_thread(emulator.stop)
        await asyncio.to_thread(self.server.stop)


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


_LAB: Lab | None = None


async def get_lab(*, worker: bool = True) -> Lab:
    """The run's lab, started on first use; with ``worker`` a worker is running on return."""
    global _LAB
    if _LAB is None:
        _LAB = await _start()
    if worker:
        await _LAB.start_worker()
    return _LAB


async def close_lab() -> None:
    global _LAB
    if _LAB is not None:
        lab, _LAB = _LAB, None
        await lab.close()


async def _start() -> Lab:
    root = Path(tempfile.mkdtemp(prefix="storyloom-bench-"))
    data_dir = root / "data"
    (root / "logs").mkdir(parents=True)
    (data_dir / "logs").mkdir(parents=True)
    server, ollama, comfy = await asyncio.gather(
        start_dev_server(root / "temporal", address=f"127.0.0.1:{free_port()}", headless=True),
        spawn_emulator("ollama", free_port(), data_dir=data_dir),
        spawn_emulator("comfyui", free_port(), data_dir=data_dir),
    )
    env = {
        **os.environ,
        "STORYLOOM_DATA_DIR": str(data_dir),
        "STORYLOOM_TEMPORAL_ADDRESS": server.address,
        "STORYLOOM_TEMPORAL_NAMESPACE": "default",
        "STORYLOOM_OLLAMA_URL": ollama.url,
        "STORYLOOM_COMFYUI_URL": comfy.url,
        "STORYLOOM_LOG_JSON": "1",
    }
    for name in ("OLLAMA_HOST", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE",
                 "STORYLOOM_DATABASE_URL"):
        env.pop(name, None)
    # SQLite in the lab's data dir unless a run asks for another database on purpose, e.g.
    # STORYLOOM_BENCH_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench
    database_url = os.environ.get("STORYLOOM_BENCH_DATABASE_URL", "")
    if database_url:
        env["STORYLOOM_DATABASE_URL"] = database_url
    fields: dict[str, Any] = {  # by alias: these fields also read TEMPORAL_ADDRESS/OLLAMA_HOST
        "data_dir": data_dir, "database_url": database_url, "comfyui_url": comfy.url,
        "STORYLOOM_TEMPORAL_ADDRESS": server.address, "STORYLOOM_TEMPORAL_NAMESPACE": "default",
        "STORYLOOM_OLLAMA_URL": ollama.url,
    }
    settings = Settings(**fields)
    client = await Client.connect(server.address, data_converter=pydantic_data_converter)
    return Lab(root, server, client, ollama, comfy, settings, env)
