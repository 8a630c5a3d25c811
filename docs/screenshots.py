"""Make the README's screenshots: ``docs/storybook.png`` and ``docs/temporal-ui.png``.

    .venv/bin/python -m docs.screenshots        # needs chromium (Debian: apt-get install chromium)

Runs the demo story (3 scenes) on its own dev server, emulators and in-process worker, all on
free ports; exports the storybook and photographs it; then photographs the Temporal UI page of
the story's second scene (Timeline: activity bars labelled with their summaries).
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

from starter.book import load_book
from starter.demo import DEMO_DIRECTIONS
from starter.devserver import start_dev_server
from starter.emulate import spawn_emulator
from starter.export_html import write_html
from starter.settings import Settings
from starter.temporal_client import connect
from starter.worker import run_worker
from tests.fixtures.chromium import Browser
from workflows_temporal.contracts import StoryRequest, StoryResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE
from workflows_temporal.story import scene_workflow_id

__all__ = ["main"]

DOCS = Path(__file__).resolve().parent
MAX_BYTES = 400_000
# The UI is a single-page app: wait until the workflow's summary and its activities are drawn.
UI_SETTLED = ("document.body.innerText.includes('scene 2:') && "
              "document.body.innerText.includes('attach_image')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _story(settings: Settings) -> tuple[str, str]:
    """Run the demo story; returns (story id, story workflow id)."""
    client = await connect(settings)
    workflow_id = f"story-{uuid.uuid4()}"
    handle = await client.start_workflow(
        "StoryWorkflow",
        StoryRequest(directions=DEMO_DIRECTIONS, model=settings.text_model,
                     template=settings.template, gpu_sharing=settings.gpu_sharing),
        id=workflow_id, task_queue=SCENE_WORKFLOW_QUEUE, result_type=StoryResult,
        static_summary="Story: the keeper and the fox",
        static_details=f"**premise**: {DEMO_DIRECTIONS[0]}\n\n**scenes**: {len(DEMO_DIRECTIONS)}"
                       f"\n\n**model**: {settings.text_model}\n\n**template**: {settings.template}")
    result = await handle.result()
    return result.story_id, workflow_id


async def _shoot(browser: Browser, url: str, out: Path, settle: str | None = None) -> None:
    visit = await browser.visit(url, settle=settle, timeout=60)
    out.write_bytes(visit.screenshot)
    size = out.stat().st_size
    print(f"{out}: {size} bytes")
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is over {MAX_BYTES} bytes: use a smaller window")


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="storyloom-shots-"))
    port, ui_port = _free_port(), _free_port()
    settings = Settings(data_dir=root / "data", temporal_address=f"127.0.0.1:{port}",
                        temporal_ui_port=ui_port)
    (settings.data_dir / "logs").mkdir(parents=True)
    server = await start_dev_server(root / "temporal", address=settings.temporal_address,
                                    ui_port=ui_port)
    emulators = [await spawn_emulator(kind, _free_port(), data_dir=settings.data_dir,
                                      time_scale=0.05) for kind in ("ollama", "comfyui")]
    settings = settings.model_copy(update={"ollama_url": emulators[0].url,
                                           "comfyui_url": emulators[1].url})
    stop = asyncio.Event()
    ready = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, "all", stop=stop,
                                            on_ready=lambda _q: ready.set()))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        story_id, workflow_id = await _story(settings)
        from activities.store.db import open_store

        store = await open_store(settings.effective_database_url)
        try:
            page = write_html(await load_book(store, story_id), root / "book")
        finally:
            await store.close()
        async with Browser(width=900, height=1250) as browser:
            await _shoot(browser, page.as_uri(), DOCS / "storybook.png")
        scene = scene_workflow_id(workflow_id, 1)
        url = (f"http://127.0.0.1:{ui_port}/namespaces/{settings.temporal_namespace}"
               f"/workflows/{quote(scene, safe='')}")
        async with Browser(width=1400, height=1500) as browser:
            await _shoot(browser, url, DOCS / "temporal-ui.png",
                         settle=UI_SETTLED)
    finally:
        stop.set()
        await asyncio.gather(worker, return_exceptions=True)
        for emulator in emulators:
            emulator.stop()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
