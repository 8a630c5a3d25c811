"""The live progress line is one row and says one thing (issue 12 findings 8 and 9)."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

from rich.console import Console

from starter.progress import show_progress
from starter.story_progress import story_line

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Handle:
    """Stands in for a workflow handle: its result comes once the test says so."""

    def __init__(self) -> None:
        self.done = asyncio.Event()

    async def result(self) -> str:
        await self.done.wait()
        return "ok"


async def test_a_retried_step_with_a_long_cause_stays_on_one_row_of_120() -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=120, force_terminal=True, color_system=None)
    handle = _Handle()
    cause = ("ComfyUI at http://127.0.0.1:8188 refused the prompt: " + "node 4 failed; " * 20
             + "\nTraceback tail")
    calls = 0

    async def line(started: float) -> str:
        nonlocal calls
        calls += 1
        if calls >= 3:
            handle.done.set()
        return f"  3.0s · rendering · render_image (started) attempt 3 · last failure: {cause}"

    result = await show_progress(handle, line, mode="rich", interval=0.05,  # type: ignore[arg-type]
                                 console=console)

    assert result == "ok"
    drawn = [ln for ln in _ANSI.sub("", screen.getvalue()).split("\n") if ln.strip()]
    assert drawn, screen.getvalue()
    assert all(len(ln) <= 120 for ln in drawn), drawn
    assert any(ln.startswith("  3.0s · rendering") and ln.endswith("…") for ln in drawn), drawn
    assert not any("Traceback tail" in ln for ln in drawn)


def test_the_story_line_says_the_current_step_not_a_contradicting_stage() -> None:
    progress: dict[str, Any] = {"scene": 3, "scenes_total": 20, "stage": "writing"}

    busy = story_line(progress, "rendering · render_image (started)", None)
    idle = story_line(progress, None, None)

    assert busy == "scene 3 of 20 · rendering · render_image (started)"
    assert idle == "scene 3 of 20 · writing"
