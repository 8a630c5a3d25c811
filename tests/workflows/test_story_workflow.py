"""StoryWorkflow: scenes in order as children, pause/resume, cancel, continue-as-new."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.common import wait_until
from tests.workflows.fakes import FakeStudio, run_workers
from tests.workflows.test_scene_workflow import Harness, root_application_error
from workflows_temporal.contracts import ImageStatus, StoryRequest, StoryResult
from workflows_temporal.story import SCENES_PER_RUN, StoryWorkflow, scene_workflow_id


@pytest.fixture
async def harness(ts_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    studio = FakeStudio()
    async with AsyncExitStack() as stack:
        yield Harness(ts_env.client, studio, await run_workers(stack, ts_env.client, studio))


def story(directions: list[str], **overrides: object) -> StoryRequest:
    base: dict[str, object] = {"directions": directions, "model": "llama3.2", "template": "scene"}
    return StoryRequest.model_validate(base | overrides)


async def start(harness: Harness, req: StoryRequest) -> WorkflowHandle[StoryWorkflow, StoryResult]:
    return await harness.client.start_workflow(
        StoryWorkflow.run, req, id=f"story-{uuid.uuid4()}", task_queue=harness.queue
    )


async def test_scenes_are_written_in_order_each_continuing_the_last(harness: Harness) -> None:
    directions = ["Mira finds a lighthouse", "The keeper is gone", "A light turns on"]
    handle = await start(harness, story(directions))
    result = await handle.result()

    assert len(result.node_ids) == 3 and result.last_node_id == result.node_ids[-1]
    nodes = harness.studio.nodes
    assert [nodes[n]["parent"] for n in result.node_ids] == [None, *result.node_ids[:-1]]
    assert {nodes[n]["story_id"] for n in result.node_ids} == {result.story_id}
    assert [nodes[n]["image_status"] for n in result.node_ids] == [ImageStatus.DONE] * 3
    firsts = [
        harness.studio.inputs("write_scene", scene_workflow_id(handle.id, i))[0].direction
        for i in range(3)
    ]
    assert firsts == directions


async def test_pause_holds_the_next_scene_until_resume(harness: Harness) -> None:
    harness.studio.write_gate = asyncio.Event()
    handle = await start(harness, story(["one", "two", "three"], illustrate=False))
    first = scene_workflow_id(handle.id, 0)
    await wait_until(lambda: first in harness.studio.writing, what="scene 1 writing")

    await handle.signal(StoryWorkflow.pause)
    harness.studio.write_gate.set()

    async def paused() -> bool:
        progress = await handle.query(StoryWorkflow.progress)
        return bool(progress["stage"] == "paused")

    await wait_until(paused, what="story paused")
    progress = await handle.query(StoryWorkflow.progress)
    assert progress["scenes_done"] == 1
    assert harness.studio.inputs("load_context", scene_workflow_id(handle.id, 1)) == []

    await handle.signal(StoryWorkflow.resume)
    result = await handle.result()
    assert len(result.node_ids) == 3


async def test_cancel_stops_the_running_scene_and_the_story(harness: Harness) -> None:
    harness.studio.block_render = True
    handle = await start(harness, story(["one", "two"]))
    await wait_until(harness.studio.render_started.is_set, what="render of scene 1")

    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    first, second = scene_workflow_id(handle.id, 0), scene_workflow_id(handle.id, 1)
    # Scene 2 may already be writing (pipelined, issue 13): every running scene is cancelled.
    cancelled = harness.studio.render_cancelled
    assert first in cancelled and set(cancelled) <= {first, second}
    for scene in cancelled:
        [attach] = harness.studio.inputs("attach_image", scene)
        assert harness.studio.nodes[attach.node_id]["error"] == "cancelled by user"


async def test_a_failing_scene_fails_the_story_with_its_reason(harness: Harness) -> None:
    handle = await start(harness, story(["one", "two"], model="llama9"))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    message = root_application_error(failure.value).message
    assert message.startswith("scene 1 failed: ollama: model 'llama9' not found")


async def test_long_story_continues_as_new_and_keeps_the_chain(harness: Harness) -> None:
    count = SCENES_PER_RUN + 2
    handle = await start(harness, story([f"part {i}" for i in range(count)], illustrate=False))
    result = await handle.result()

    assert len(result.node_ids) == count
    nodes = harness.studio.nodes
    assert [nodes[n]["parent"] for n in result.node_ids] == [None, *result.node_ids[:-1]]
    first_run = harness.client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    assert (await first_run.describe()).status is WorkflowExecutionStatus.CONTINUED_AS_NEW
    assert (await handle.describe()).status is WorkflowExecutionStatus.COMPLETED


async def test_every_scene_renders_with_the_image_settings_the_story_started_with(
    harness: Harness,
) -> None:
    count = SCENES_PER_RUN + 1  # across a continue-as-new too
    req = story([f"part {i}" for i in range(count)], checkpoint="sd_xl_base_1.0.safetensors",
                image_width=320, image_height=192)
    handle = await start(harness, req)
    await handle.result()
    renders = [harness.studio.inputs("render", scene_workflow_id(handle.id, i))[-1]
               for i in range(count)]
    assert {(r.checkpoint, r.width, r.height) for r in renders} == {
        ("sd_xl_base_1.0.safetensors", 320, 192)}
