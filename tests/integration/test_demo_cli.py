"""`storyloom demo`, the README's first command: a whole illustrated story on its own services."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import free_port
from tests.fixtures.processes import CLI

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

REAL_SERVICE_VARS = ("OLLAMA_HOST", "STORYLOOM_OLLAMA_URL", "STORYLOOM_COMFYUI_URL",
                     "TEMPORAL_ADDRESS", "STORYLOOM_DATABASE_URL", "STORYLOOM_DATA_DIR")


async def test_demo_writes_an_illustrated_story_and_says_where_it_is(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in REAL_SERVICE_VARS}
    env["STORYLOOM_TEMPORAL_ADDRESS"] = f"127.0.0.1:{free_port()}"  # never a user's server
    env["STORYLOOM_TEMPORAL_UI_PORT"] = str(free_port())
    data = tmp_path / "demo-data"
    run = await asyncio.to_thread(
        subprocess.run, [*CLI, "demo", "--no-keep", "--data-dir", str(data)], env=env,
        capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = run.stdout
    # The README's first command: no warning and no traceback on the screen.
    screen = (run.stdout + run.stderr).lower()
    assert "warning" not in screen and "traceback" not in screen, screen[-3000:]
    assert "DEMO ON EMULATED SERVICES" in out  # the banner says the models are emulated
    done = re.search(r"Done in [\d.]+ s: story (s_[0-9a-f]+), 3 scenes, 0 images failed", out)
    assert done, out
    story_id = done.group(1)
    book = data / "storybook" / "index.html"
    assert f"storybook : {book}" in out and book.is_file()
    assert f"story-{story_id}.md" in out and (data / f"story-{story_id}.md").is_file()
    # --no-keep stops the Temporal UI with the demo: no link to a UI that is gone
    assert "StoryId%3D" not in out and "http://" not in out.split("Done in")[1]
    with sqlite3.connect(data / "storyloom.db") as db:
        rows = db.execute("SELECT image_status, image_path, parent_id FROM nodes "
                          "WHERE story_id = ? ORDER BY depth", (story_id,)).fetchall()
    assert [r[0] for r in rows] == ["done", "done", "done"]
    assert rows[0][2] is None and all(Path(r[1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
                                      for r in rows)
    # One copy of each picture (besides the emulated ComfyUI's own output folder): the book
    # and the notes link to media/.
    pictures = [p for p in data.rglob("*.png") if "comfyui" not in p.relative_to(data).parts]
    assert sorted(pictures) == sorted(Path(r[1]) for r in rows), pictures
    assert not (data / "images").exists() and not (data / "storybook" / "images").exists()
    assert "(s)" not in out and "1 scenes" not in out
