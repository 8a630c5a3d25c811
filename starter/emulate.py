"""Run the Ollama and ComfyUI emulators: in the foreground (`storyloom emulate`) or as
subprocesses that `storyloom up --emulate` starts, waits for and stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from starter.outcome import EXIT_USAGE, CliFailure
from starter.ports import port_in_use

__all__ = ["EmulatorProcess", "GpuLayout", "port_of", "run_foreground", "spawn_emulator"]

READY_PATH = {"ollama": "/api/version", "comfyui": "/system_stats"}


def port_of(url: str, default: int) -> int:
    """The port of a service URL (``default`` when the URL names none)."""
    return urlsplit(url).port or default


def _check_free(kind: str, host: str, port: int) -> None:
    if port_in_use(host, port):
        raise CliFailure(
            f"Port {port} on {host} is already taken, so the {kind} emulator cannot listen "
            f"there (is a real {kind} running?). Stop it, or choose another port "
            f"(`storyloom emulate {kind} --port N`, or STORYLOOM_"
            f"{'OLLAMA' if kind == 'ollama' else 'COMFYUI'}_URL).",
            EXIT_USAGE,
        )


@dataclass(frozen=True)
class GpuLayout:
    """Emulated GPUs for `storyloom emulate`: ``gpus`` ComfyUI emulators (one per GPU, on
    consecutive ports), and whether the Ollama emulator shares GPU 0 with the first of them
    (``shared``: then a render beside a resident LLM fails with CUDA out of memory), or with
    the Ollama emulator of another process at ``shared_with`` (asked through its /api/ps)."""

    gpus: int = 1
    shared: bool = False
    shared_with: str | None = None
    checkpoint_load_delay: float = 0.0  # seconds (× time scale) to load a cold checkpoint

    def comfy_root(self, root_dir: Path, index: int) -> Path:
        """GPU 0 keeps ``root_dir``; GPU i uses ``root_dir`` with ``-gpu<i>`` appended."""
        return root_dir if index == 0 else root_dir.with_name(f"{root_dir.name}-gpu{index}")


async def run_foreground(
    kinds: list[str],
    *,
    host: str = "127.0.0.1",
    ollama_port: int,
    comfy_port: int,
    time_scale: float,
    root_dir: Path,
    layout: GpuLayout | None = None,
) -> None:
    """Serve the emulators until Ctrl-C or SIGTERM; prints each URL when it listens."""
    from emulators.gpu import EmulatedGpu

    layout = layout or GpuLayout()
    if layout.shared and kinds != ["ollama", "comfyui"]:
        raise CliFailure("--shared-gpu links the Ollama and ComfyUI emulators of one process: "
                         "use `storyloom emulate all --shared-gpu`, or `storyloom emulate "
                         "comfyui --shared-gpu-with OLLAMA_URL`.", EXIT_USAGE)
    if layout.shared_with and kinds != ["comfyui"]:
        raise CliFailure("--shared-gpu-with links a ComfyUI emulator to an Ollama emulator in "
                         "another process: use it with `storyloom emulate comfyui`.", EXIT_USAGE)
    listeners = [("ollama", ollama_port, "")] if "ollama" in kinds else []
    if "comfyui" in kinds:
        listeners += [("comfyui", comfy_port + i, f" (gpu{i})" if layout.gpus > 1 else "")
                      for i in range(layout.gpus)]
    for kind, port, _ in listeners:
        _check_free(kind, host, port)
    card = EmulatedGpu("gpu0") if layout.shared or layout.shared_with else None
    if card is not None and layout.shared_with:
        card.link_llm_url(layout.shared_with)
    servers = []
    if "ollama" in kinds:
        from emulators.ollama import serve as serve_ollama

        servers.append(serve_ollama(host, ollama_port, time_scale=time_scale, gpu=card))
    if "comfyui" in kinds:
        from emulators.comfyui import serve as serve_comfy

        faults = ({"checkpoint_load_delay": layout.checkpoint_load_delay}
                  if layout.checkpoint_load_delay else None)
        for i in range(layout.gpus):
            root = layout.comfy_root(root_dir, i)
            root.mkdir(parents=True, exist_ok=True)
            servers.append(serve_comfy(host, comfy_port + i, root_dir=root, time_scale=time_scale,
                                       faults=faults,
                                       gpu=card if i == 0 and card else EmulatedGpu(f"gpu{i}")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s) for s in servers]
    for kind, port, label in listeners:
        await _wait_ready(kind, f"http://{host}:{port}", deadline_s=15.0, tasks=tasks)
        print(f"EMULATED {kind} listening on http://{host}:{port}{label}", flush=True)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, Exception):
            raise result


async def _wait_ready(
    kind: str, url: str, *, deadline_s: float, tasks: list[asyncio.Task[None]] | None = None,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            for task in tasks or []:
                if task.done():
                    task.result()  # raises the server's startup error
                    raise CliFailure(f"the {kind} emulator stopped at once")
            if proc is not None and proc.poll() is not None:
                raise CliFailure(f"the {kind} emulator exited with code {proc.returncode}; "
                                 "see its log in the data directory's logs/")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url + READY_PATH[kind])).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise CliFailure(f"the {kind} emulator did not answer at {url} "
                                 f"within {deadline_s:.0f}s")
            await asyncio.sleep(0.05)


@dataclass
class EmulatorProcess:
    """An emulator in a subprocess; ``stop()`` sends SIGTERM, then kills after a timeout."""

    kind: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _popen(cmd: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


async def spawn_emulator(
    kind: str, port: int, *, data_dir: Path, host: str = "127.0.0.1", time_scale: float = 1.0
) -> EmulatorProcess:
    """Start ``storyloom emulate <kind>`` in a subprocess and wait until it answers."""
    _check_free(kind, host, port)
    cmd = [sys.executable, "-m", "starter.cli", "emulate", kind, "--time-scale", str(time_scale)]
    cmd += ["--port", str(port)] if kind == "ollama" else [
        "--comfy-port", str(port), "--root", str(data_dir / "comfyui")]
    proc = _popen(cmd, data_dir / "logs" / f"emulator-{kind}.log")
    emulator = EmulatorProcess(kind, f"http://{host}:{port}", proc)
    try:
        await _wait_ready(kind, emulator.url, deadline_s=20.0, proc=proc)
    except BaseException:
        emulator.stop()
        raise
    return emulator
