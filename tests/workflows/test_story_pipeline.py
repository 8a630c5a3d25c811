"""StoryWorkflow pipelining (separate GPU: next scene writes while the last one renders; shared:
strict alternation), phase timings, pipelined cancel, and SceneWorkflow's story memory steps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.common import wait_until
from tests.workflows.fakes import FakeStudio, run_workers
from tests.workflows.test_scene_workflow import Harness
from workflows_temporal.contracts import (
    GpuSharing,
    RecalledContext,
    SceneRequest,
    StoryRequest,
)
from workflows_temporal.story import StoryWorkflow, scene_workflow_id


@pytest.fixture
async def harness(ts_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    studio = FakeStudio()
    async with AsyncExitStack() as stack:
        yield Harness(ts_env.client, studio, await run_workers(stack, ts_env.client, studio))


def story(count: int, sharing: GpuSharing, **overrides: object) -> StoryRequest:
    base: dict[str, object] = {
        "directions": [f"part {i}" for i in range(count)], "model": "llama3.2",
        "template": "scene", "gpu_sharing": sharing,
    }
    return StoryRequest.model_validate(base | overrides)


def at(studio: FakeStudio, step: str, wid: str, edge: str) -> int:
    """Position of (step, workflow, start|end) in the fake's timeline."""
    return studio.timeline.index((step, wid, edge))


@pytest.mark.parametrize("sharing", [GpuSharing.SEPARATE, GpuSharing.SHARED])
async def test_the_next_scene_is_written_while_the_last_waits_for_its_render(
    harness: Harness, sharing: GpuSharing
) -> None:
    """Shared too (issue 13): the GPU scheduler, not the story, keeps text and render apart."""
    studio = harness.studio
    studio.render_gate = asyncio.Event()
    sid = f"story-{uuid.uuid4()}"
    handle = await harness.client.start_workflow(
        StoryWorkflow.run, story(3, sharing), id=sid, task_queue=harness.queue)
    second = scene_workflow_id(sid, 1)
    # Renders are held until scene 2 is being written: without pipelining this never happens.
    await wait_until(lambda: second in studio.writing, what="scene 2 writing during render 1")
    studio.render_gate.set()
    result = await handle.result()

    ids = [scene_workflow_id(sid, i) for i in range(3)]
    assert at(studio, "write_scene", ids[1], "start") < at(studio, "render", ids[0], "end")
    # At most one scene illustrating while the next writes: scene 3 waits for scene 1.
    assert at(studio, "write_scene", ids[2], "start") > at(studio, "render", ids[0], "end")
    nodes = studio.nodes
    assert [nodes[n]["parent"] for n in result.node_ids] == [None, *result.node_ids[:-1]]
    assert [s.node_id for s in result.scenes] == result.node_ids
    assert all(s.image_status == "done" for s in result.scenes)
    assert result.makespan_s >= max(s.timings.total_s for s in result.scenes)


async def test_cancel_while_pipelined_cancels_both_running_scenes(harness: Harness) -> None:
    studio = harness.studio
    studio.block_render = True
    sid = f"story-{uuid.uuid4()}"
    handle = await harness.client.start_workflow(
        StoryWorkflow.run, story(4, GpuSharing.SEPARATE), id=sid, task_queue=harness.queue)
    second = scene_workflow_id(sid, 1)
    await wait_until(lambda: bool(studio.inputs("render", second)), what="render of scene 2")

    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    first = scene_workflow_id(sid, 0)
    await wait_until(lambda: len(studio.render_cancelled) == 2, what="both renders cancelled")
    assert sorted(studio.render_cancelled) == [first, second]
    for wid in (first, second):
        [attach] = studio.inputs("attach_image", wid)
        assert studio.nodes[attach.node_id]["error"] == "cancelled by user"
    assert studio.inputs("load_context", scene_workflow_id(sid, 2)) == []


def scene(**overrides: object) -> SceneRequest:
    base: dict[str, object] = {"direction": "Mira returns to the lighthouse", "model": "llama3.2",
                               "template": "scene", "embed_model": "all-minilm",
                               "story_id": "story-1", "parent_node_id": "node-0"}
    return SceneRequest.model_validate(base | overrides)


async def test_over_budget_path_recalls_memories_for_the_writer(harness: Harness) -> None:
    studio = harness.studio
    studio.summaries = [f"scene {i} " + "word " * 60 for i in range(6)]  # ~80 tokens each
    studio.recalled = RecalledContext(recent=["the latest"], memories=["the old promise"])
    wid, result = await harness.run(scene(context_budget_tokens=200))

    [write] = studio.inputs("write_scene", wid)
    assert write.summaries == ["the latest"] and write.memories == ["the old promise"]
    [recall] = studio.inputs("recall_memories", wid)
    assert recall.parent_node_id == "node-0" and recall.budget_tokens == 200
    embedded = [e.texts[0] for e in studio.inputs("embed_texts", wid)]
    assert embedded[0] == "Mira returns to the lighthouse"  # the query: the new direction
    [stored] = studio.inputs("store_embedding", wid)
    assert stored.node_id == result.node_id and studio.nodes[result.node_id]["embedding"]


async def test_within_budget_path_goes_whole_and_nothing_is_recalled(harness: Harness) -> None:
    studio = harness.studio
    studio.summaries = ["one short scene", "another short scene"]
    wid, _ = await harness.run(scene())

    [write] = studio.inputs("write_scene", wid)
    assert write.summaries == ["one short scene", "another short scene"]
    assert write.memories == []
    assert studio.inputs("recall_memories", wid) == []
    assert len(studio.inputs("store_embedding", wid)) == 1  # still remembered for later


async def test_no_embed_model_means_no_memory_steps(harness: Harness) -> None:
    wid, _ = await harness.run(scene(embed_model=None))
    assert harness.studio.inputs("embed_texts", wid) == []
    assert harness.studio.inputs("store_embedding", wid) == []
