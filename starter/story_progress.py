"""Follow one story live: "scene k of N" plus the current scene's step (and the scene being
illustrated meanwhile, when scenes are pipelined). Rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from typing import Any, TextIO

from temporalio.client import Client, WorkflowHandle

from starter.progress import Mode, render_line, show_progress, snapshot
from workflows_temporal.contracts import StoryResult

__all__ = ["follow_story", "story_line"]


_RPC_TIMEOUT = timedelta(seconds=2)


def story_line(progress: dict[str, Any], current: str | None, illustrating: str | None) -> str:
    """One line: scene k of N, the current scene's step (else the story's stage), and the scene
    illustrated meanwhile."""
    parts = [f"scene {progress.get('scene', '?')} of {progress.get('scenes_total', '?')}"]
    # The writing scene's own step says what happens now; the story's stage only without it
    # (both read "writing · now: rendering" while a scene's picture was drawn).
    parts.append(current or str(progress.get("stage", "")))
    if illustrating:
        parts.append(f"illustrating previous: {illustrating}")
    return " · ".join(p for p in parts if p)


async def _child_step(client: Client, workflow_id: str | None, started: float) -> str | None:
    if not workflow_id:
        return None
    with contextlib.suppress(Exception):
        snap = await snapshot(client, client.get_workflow_handle(workflow_id), started)
        return render_line(snap).split(" · ", 1)[-1]
    return None


async def _line(client: Client, handle: WorkflowHandle[Any, Any], started: float) -> str | None:
    progress = await handle.query("progress", rpc_timeout=_RPC_TIMEOUT)
    if not isinstance(progress, dict):
        return None
    current = await _child_step(client, progress.get("current_scene"), started)
    other = progress.get("illustrating_scene")
    illustrating = None
    if other and other != progress.get("current_scene"):
        illustrating = await _child_step(client, other, started)
    return f"{time.monotonic() - started:5.1f}s · " + story_line(progress, current, illustrating)


async def follow_story(client: Client, handle: WorkflowHandle[Any, Any], *, mode: Mode,
                       interval: float = 0.5, out: TextIO | None = None) -> StoryResult:
    """Show progress until the story closes; returns its StoryResult or raises its failure
    (``WorkflowFailureError``) as ``handle.result()`` does."""

    async def line(started: float) -> str | None:
        return await _line(client, handle, started)

    return StoryResult.model_validate(await show_progress(
        handle, line, mode=mode, interval=interval, out=out))
