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

__all__ = ["EmulatorProcess", "port_of", "run_foreground", "spawn_emulator"]

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


async def run_foreground(
    kinds: list[str],
    *,
    host: str = "127.0.0.1",
    ollama_port: int,
    comfy_port: int,
    time_scale: float,
    root_dir: Path,
) -> None:
    """Serve the emulators until Ctrl-C or SIGTERM; prints each URL when it listens."""
    for kind in kinds:
        _check_free(kind, host, ollama_port if kind == "ollama" else comfy_port)
    servers = []
    if "ollama" in kinds:
        from emulators.ollama import serve as serve_ollama

        servers.append(serve_ollama(host, ollama_port, time_scale=time_scale))
    if "comfyui" in kinds:
        from emulators.comfyui import serve as serve_comfy

        root_dir.mkdir(parents=True, exist_ok=True)
        servers.append(serve_comfy(host, comfy_port, root_dir=root_dir, time_scale=time_scale))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s) for s in servers]
    for kind in kinds:
        port = ollama_port if kind == "ollama" else comfy_port
        await _wait_ready(kind, f"http://{host}:{port}", deadline_s=15.0, tasks=tasks)
        print(f"EMULATED {kind} listening on http://{host}:{port}", flush=True)
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
