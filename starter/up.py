"""`storyloom up`: the Temporal dev server, a worker (role all) and optionally both emulators,
with every URL printed, until Ctrl-C or SIGTERM stops them all in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import httpx

from starter.devserver import DevServer, DevServerError, start_dev_server
from starter.emulate import EmulatorProcess, port_of, spawn_emulator
from starter.outcome import EXIT_OK, EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.ui_link import ui_answers
from starter.worker import run_worker

__all__ = ["run_up"]

logger = logging.getLogger(__name__)
_EXIT_INTERRUPTED = 130  # as for Ctrl-C anywhere else


async def _reachable(url: str) -> str | None:
    """None when the service answers over HTTP; otherwise the reason."""
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            await http.get(url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


async def _check_real_services(settings: Settings) -> list[str]:
    warnings = []
    for name, url, fix in (
        ("Ollama", settings.ollama_url + "/api/version",
         "start it with `ollama serve` or set OLLAMA_HOST"),
        ("ComfyUI", settings.comfyui_url + "/system_stats",
         "start it with `python main.py --listen 127.0.0.1` or set STORYLOOM_COMFYUI_URL"),
    ):
        reason = await _reachable(url)
        if reason:
            warnings.append(f"WARNING: {name} does not answer at {url} ({reason}): {fix}, "
                            "or run `storyloom up --emulate` for emulated services.")
    return warnings


def _banner(settings: Settings, server: DevServer, emulated: bool, worker: bool,
            ui_up: bool) -> str:
    lines = ["storyloom is up" + (" — with EMULATED Ollama and ComfyUI (no real models, "
                                   "placeholder images)" if emulated else "")]
    reused = " (already running, reused)" if server.reused else ""
    lines.append(f"  Temporal gRPC : {server.address}  namespace {server.namespace}{reused}")
    ui = server.ui_url if server.ui_url and ui_up else (
        "(headless: no web UI)" if server.ui_url is None else
        f"(not answering at {server.ui_url}: the reused server runs without it)")
    lines.append(f"  Temporal UI   : {ui}")
    tag = "  [EMULATED]" if emulated else ""
    lines.append(f"  Ollama        : {settings.ollama_url}{tag}")
    lines.append(f"  ComfyUI       : {settings.comfyui_url}{tag}")
    lines.append(f"  data dir      : {settings.data_dir}")
    lines.append(f"  worker        : {'role all, in this process' if worker else 'not started'}")
    lines.append("Next: storyloom scene \"A lighthouse keeper finds a talking fox\"   "
                 "(Ctrl-C here stops everything)")
    if worker:  # the worker's identity names its store (starter/same_store.py)
        reach = ("" if server.address == "127.0.0.1:7233" else
                 f" once it has `export STORYLOOM_TEMPORAL_ADDRESS={server.address}`")
        lines.append(f"Another terminal uses this data dir by itself{reach}: no "
                     "STORYLOOM_DATA_DIR needed.")
    return "\n".join(lines)


def _stopped_during_startup() -> int:
    print("Stopped during startup (Ctrl-C): nothing is left running.", flush=True)
    return _EXIT_INTERRUPTED


async def run_up(
    settings: Settings, *, emulate: bool, worker: bool, headless: bool, time_scale: float = 1.0
) -> int:
    """Start everything, print the URLs, run until a signal, stop everything."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = await start_dev_server(
            settings.data_dir, address=settings.temporal_address,
            namespace=settings.temporal_namespace, ui_port=settings.temporal_ui_port,
            headless=headless,
        )
    except DevServerError as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc
    emulators: list[EmulatorProcess] = []
    try:
        if stop.is_set():  # Ctrl-C while the server started: no banner, stop what started
            return _stopped_during_startup()
        if emulate:
            emulators.append(await spawn_emulator(
                "ollama", port_of(settings.ollama_url, 11434), data_dir=settings.data_dir,
                time_scale=time_scale))
            emulators.append(await spawn_emulator(
                "comfyui", port_of(settings.comfyui_url, 8188), data_dir=settings.data_dir,
                time_scale=time_scale))
            settings = settings.model_copy(update={
                "ollama_url": emulators[0].url, "comfyui_url": emulators[1].url})
        else:
            for warning in await _check_real_services(settings):
                print(warning, flush=True)
        ui_up = server.ui_url is not None and await ui_answers(settings)
        if stop.is_set():
            return _stopped_during_startup()
        print(_banner(settings, server, emulate, worker, ui_up), flush=True)
        if worker:
            await run_worker(settings, "all", stop=stop)
        else:
            await stop.wait()
    finally:
        print("stopping…", flush=True)
        for emulator in reversed(emulators):
            emulator.stop()
        with contextlib.suppress(Exception):
            server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return EXIT_OK
