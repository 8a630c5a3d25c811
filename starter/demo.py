"""`storyloom demo`: a whole illustrated story end to end on the embedded defaults.

Starts (or reuses) the Temporal dev server, a worker in this process and, unless real Ollama and
ComfyUI are configured and answer, both emulators on free ports; writes a short story through
StoryWorkflow; then prints where the text, the images and the Temporal UI are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import WorkflowFailureError

from starter.book import load_book
from starter.console import count
from starter.devserver import DevServer, DevServerError, start_dev_server
from starter.emulate import EmulatorProcess, spawn_emulator
from starter.export_html import write_html
from starter.export_markdown import write_markdown
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure, root_message
from starter.ports import port_in_use
from starter.settings import Settings
from starter.story_command import build_story_request, start_story
from starter.story_progress import follow_story
from starter.temporal_client import connect
from starter.ui_link import story_list_url
from starter.worker import run_worker
from workflows_temporal.contracts import ImageStatus

__all__ = ["DEMO_DIRECTIONS", "run_demo"]

logger = logging.getLogger(__name__)

DEMO_DIRECTIONS = [
    "On a stormy night the keeper Mara finds a fox called Ember hiding in the lighthouse",
    "Ember leads Mara down to the rocks where a ship's lantern still burns under water",
    "At dawn Mara and Ember bring the lantern back and the sea goes quiet",
]
_REAL_ENV = ("STORYLOOM_OLLAMA_URL", "OLLAMA_HOST", "STORYLOOM_COMFYUI_URL")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return (await http.get(url)).status_code < 500
    except httpx.HTTPError:
        return False


async def _use_real_services(settings: Settings) -> bool:
    """Real services only when the user pointed storyloom at them and both answer."""
    if not any(os.environ.get(name) for name in _REAL_ENV):
        return False
    ok_llm = await _answers(settings.ollama_url + "/api/version")
    ok_img = await _answers(settings.comfyui_url + "/system_stats")
    if not (ok_llm and ok_img):
        print("Configured Ollama/ComfyUI do not both answer; using the emulators instead.")
    return ok_llm and ok_img


async def _start_temporal(settings: Settings) -> tuple[Settings, DevServer]:
    """The demo's own dev server, file-backed in its data dir.

    Never a server that is already running: its workers may serve another data dir, and two
    workers with two databases on the same queues would split the story between them.
    """
    host, _, port = settings.temporal_address.rpartition(":")
    address, ui_port = settings.temporal_address, settings.temporal_ui_port
    if port_in_use(host, int(port)):
        address = f"{host}:{_free_port()}"
    if port_in_use(host, ui_port):
        ui_port = _free_port()
    settings = settings.model_copy(update={"temporal_address": address,
                                           "temporal_ui_port": ui_port})
    try:
        server = await start_dev_server(settings.data_dir, address=address,
                                        namespace=settings.temporal_namespace, ui_port=ui_port)
    except DevServerError as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc
    return settings, server


async def _export(settings: Settings, story_id: str) -> tuple[Path, Path]:
    """The finished story as an HTML storybook and Markdown notes in the data dir."""
    from activities.store.db import open_store

    store = await open_store(settings.effective_database_url)
    try:
        book = await load_book(store, story_id)
    finally:
        await store.close()
    book_dir = settings.data_dir / "storybook"
    home = settings.data_dir  # the book and the notes link to media/: one copy of each picture
    write_html(book, book_dir, home=home, force=True)
    notes = write_markdown(book, settings.data_dir / f"story-{story_id}.md", home=home)
    return book_dir, notes


async def run_demo(settings: Settings, *, keep: bool, time_scale: float) -> int:
    """Run the demo story; with ``keep``, leave everything up until Ctrl-C."""
    started = time.monotonic()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    emulators: list[EmulatorProcess] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings, server = await _start_temporal(settings)
    worker_task: asyncio.Task[None] | None = None
    try:
        if not await _use_real_services(settings):
            emulators.append(await spawn_emulator("ollama", _free_port(),
                                                  data_dir=settings.data_dir,
                                                  time_scale=time_scale))
            emulators.append(await spawn_emulator("comfyui", _free_port(),
                                                  data_dir=settings.data_dir,
                                                  time_scale=time_scale))
            settings = settings.model_copy(update={"ollama_url": emulators[0].url,
                                                   "comfyui_url": emulators[1].url})
            print("=" * 72)
            print("DEMO ON EMULATED SERVICES: no real Ollama or ComfyUI is configured, so the")
            print("text is deterministic placeholder prose and the pictures are generated")
            print("patterns. Set OLLAMA_HOST and STORYLOOM_COMFYUI_URL to use real ones.")
            print("=" * 72)
        print(f"Temporal {server.address} (UI {server.ui_url}), Ollama {settings.ollama_url}, "
              f"ComfyUI {settings.comfyui_url}, data {settings.data_dir}", flush=True)
        ready = asyncio.Event()
        worker_task = asyncio.create_task(
            run_worker(settings, "all", stop=stop, on_ready=lambda _q: ready.set()))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, worker_task], return_when=asyncio.FIRST_COMPLETED)
        if worker_task.done():
            worker_task.result()  # raises the worker's error
        client = await connect(settings)
        premise = DEMO_DIRECTIONS[0]
        request = build_story_request(settings, premise, len(DEMO_DIRECTIONS), illustrate=True,
                                      directions=DEMO_DIRECTIONS)
        handle = await start_story(settings, client, request, premise)
        print(f"Writing a {len(DEMO_DIRECTIONS)}-scene illustrated story ({handle.id})…",
              flush=True)
        try:
            result = await follow_story(client, handle, mode="plain", out=sys.stdout)
        except WorkflowFailureError as exc:
            print(f"The demo story failed: {root_message(exc)}. Logs: {settings.data_dir / 'logs'}",
                  file=sys.stderr)
            return EXIT_FAILED
        book_dir, notes = await _export(settings, result.story_id)
        failed = sum(1 for scene in result.scenes if scene.image_status == ImageStatus.FAILED)
        print(f"\nDone in {time.monotonic() - started:.1f} s: story {result.story_id}, "
              f"{count(len(result.scenes), 'scene')}, {count(failed, 'image')} failed.")
        print(f"  storybook : {book_dir / 'index.html'}")
        print(f"  text      : {notes}")
        print(f"  images    : {settings.media_dir}")
        print(f"  database  : {settings.effective_database_url}")
        if keep:  # the UI lives only as long as the demo: a link only while it answers
            print(f"  Temporal  : {story_list_url(settings, result.story_id)}")
        else:
            print("  Temporal  : stopped with the demo (run it in a terminal, or with --keep, "
                  "to browse its workflows)")
        print(f"  more      : storyloom show {result.story_id}   (with STORYLOOM_DATA_DIR="
              f"{settings.data_dir})")
        if keep:
            print("Everything stays up so you can look around; Ctrl-C stops it.", flush=True)
            await stop.wait()
        return EXIT_OK
    finally:
        stop.set()
        if worker_task is not None:
            with contextlib.suppress(BaseException):
                await worker_task
        for emulator in reversed(emulators):
            emulator.stop()
        with contextlib.suppress(Exception):
            server.stop()
