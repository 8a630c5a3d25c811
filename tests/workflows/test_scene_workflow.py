"""SceneWorkflow against stand-in activities on the time-skipping server: what the user sees."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from tests.fixtures.common import wait_until
from tests.workflows.fakes import FakeStudio, run_workers
from workflows_temporal.cancels import KEPT_AFTER_CANCEL_NOTE
from workflows_temporal.contracts import (
    CharacterLook,
    GpuSharing,
    ImageStatus,
    RetryImageRequest,
    SceneRequest,
    SceneResult,
)
from workflows_temporal.retry_image import RetryImageWorkflow
from workflows_temporal.scene import SceneWorkflow
from workflows_temporal.story_memory import node_seed

STORY_ID = SearchAttributeKey.for_keyword("StoryId")
NODE_ID = SearchAttributeKey.for_keyword("NodeId")


@dataclass
class Harness:
    client: Client
    studio: FakeStudio
    queue: str

    async def start(
        self, req: SceneRequest, wid: str | None = None
    ) -> WorkflowHandle[SceneWorkflow, SceneResult]:
        return await self.client.start_workflow(
            SceneWorkflow.run,
            req,
            id=wid or f"scene-{uuid.uuid4()}",
            task_queue=self.queue,
            static_summary=f"scene: {req.direction}",
        )

    async def run(self, req: SceneRequest, wid: str | None = None) -> tuple[str, SceneResult]:
        handle = await self.start(req, wid)
        return handle.id, await handle.result()


@pytest.fixture
async def harness(ts_env: WorkflowEnvironment) -> AsyncIterator[Harness]:
    studio = FakeStudio()
    async with AsyncExitStack() as stack:
        queue = await run_workers(stack, ts_env.client, studio)
        yield Harness(ts_env.client, studio, queue)


def request(**overrides: object) -> SceneRequest:
    base: dict[str, object] = {
        "direction": "Mira finds a lighthouse in the fog",
        "model": "llama3.2",
        "template": "scene",
        "style": "watercolour",
    }
    return SceneRequest.model_validate(base | overrides)


def root_application_error(err: BaseException) -> ApplicationError:
    current: BaseException | None = err
    while current is not None and not isinstance(current, ApplicationError):
        current = current.__cause__
    assert current is not None, f"no ApplicationError in {err!r}"
    return current


async def test_happy_path_illustrates_the_scene(harness: Harness) -> None:
    handle = await harness.start(request())
    result = await handle.result()

    assert result.image_status is ImageStatus.DONE
    assert result.title == "Mira Finds A"
    assert result.image_path and result.image_path.startswith("media/")
    assert result.workflow_id == handle.id
    node = harness.studio.nodes[result.node_id]
    assert node["image_status"] is ImageStatus.DONE
    assert node["image_path"] == result.image_path
    assert result.timings.total_s >= 0.0

    render = harness.studio.inputs("render", handle.id)[0]
    assert render.template == "scene"
    assert "harbour" in render.positive and "yellow coat" in render.positive
    assert render.positive.endswith("watercolour")
    attach = harness.studio.inputs("attach_image", handle.id)[0]
    assert (attach.prompt_id, attach.seed, attach.template) == (
        render_prompt_id(harness, handle.id),
        render.seed,
        "scene",
    )

    desc = await handle.describe()
    assert desc.typed_search_attributes.get(STORY_ID) == result.story_id
    assert desc.typed_search_attributes.get(NODE_ID) == result.node_id
    progress = await handle.query(SceneWorkflow.progress)
    assert progress == {
        "stage": "done",
        "story_id": result.story_id,
        "node_id": result.node_id,
        "title": result.title,
        "image_status": "done",
    }

    summaries = await activity_summaries(harness.client, handle)
    assert summaries[0] == "load context: new story"
    assert summaries[1].startswith("write scene 1: Mira finds a lighthouse")
    assert f"render scene 1 (scene, seed {render.seed})" in summaries
    assert summaries[-1] == "attach image: done"


def render_prompt_id(harness: Harness, wid: str) -> str:
    """The prompt_id the fake ComfyUI derived for this workflow's render."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{wid}/render"))


async def activity_summaries(client: Client, handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    out: list[str] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payload = event.user_metadata.summary
            out.append(str(client.data_converter.payload_converter.from_payload(payload)))
    return out


async def test_no_illustration_skips_the_image(harness: Harness) -> None:
    wid, result = await harness.run(request(illustrate=False))

    assert result.image_status is ImageStatus.SKIPPED
    assert result.image_path is None
    assert harness.studio.inputs("render", wid) == []
    assert harness.studio.inputs("attach_image", wid) == []
    assert harness.studio.nodes[result.node_id]["text"].startswith("Mira finds a lighthouse")


async def test_image_failing_for_good_marks_the_node_and_the_scene_succeeds(
    harness: Harness,
) -> None:
    harness.studio.failing["render"] = ApplicationError(
        "comfyui: node 3 (KSampler) failed: CUDA out of memory\n(at http://127.0.0.1:8188)",
        type="ComfyExecutionError",
        non_retryable=True,
    )
    wid, result = await harness.run(request())

    assert result.image_status is ImageStatus.FAILED
    assert result.image_error == (
        "comfyui: node 3 (KSampler) failed: CUDA out of memory (at http://127.0.0.1:8188)"
    )
    node = harness.studio.nodes[result.node_id]
    assert node["image_status"] is ImageStatus.FAILED
    assert node["error"] == result.image_error
    assert node["text"]  # the scene itself is kept
    assert len(harness.studio.inputs("render", wid)) == 1  # non-retryable: one attempt


async def test_cast_extraction_failing_also_only_fails_the_image(harness: Harness) -> None:
    harness.studio.failing["extract_cast"] = ApplicationError(
        "ollama: the answer is not valid JSON for the cast schema",
        type="StructuredOutputError",
        non_retryable=True,
    )
    wid, result = await harness.run(request())

    assert result.image_status is ImageStatus.FAILED
    assert "not valid JSON" in (result.image_error or "")
    assert harness.studio.nodes[result.node_id]["image_status"] is ImageStatus.FAILED
    assert harness.studio.inputs("render", wid) == []


async def test_rejected_reference_image_falls_back_to_the_plain_template(
    harness: Harness,
) -> None:
    harness.studio.stored_looks["Mira"] = CharacterLook(
        name="Mira", look="red-haired girl, yellow raincoat", reference_image="refs/mira.png"
    )
    harness.studio.rejected_templates.add("scene_with_reference")
    wid, result = await harness.run(request())

    renders = harness.studio.inputs("render", wid)
    assert [(r.template, r.reference_image) for r in renders] == [
        ("scene_with_reference", "refs/mira.png"),
        ("scene", None),
    ]
    assert renders[0].step != renders[1].step  # two distinct ComfyUI prompt ids
    assert "red-haired girl, yellow raincoat" in renders[0].positive  # the stored look wins
    assert "a girl in a yellow coat" not in renders[0].positive
    assert result.image_status is ImageStatus.DONE
    note = harness.studio.nodes[result.node_id]["note"]
    assert note.startswith("reference image rejected: comfyui: node 12 (IPAdapter) failed")
    assert note.endswith("fell back to scene")


async def test_reference_image_is_used_when_it_renders(harness: Harness) -> None:
    harness.studio.stored_looks["Mira"] = CharacterLook(
        name="Mira", look="red-haired girl", reference_image="refs/mira.png"
    )
    wid, result = await harness.run(request())

    renders = harness.studio.inputs("render", wid)
    assert [(r.template, r.reference_image) for r in renders] == [
        ("scene_with_reference", "refs/mira.png")
    ]
    assert harness.studio.nodes[result.node_id]["note"] is None


async def test_unknown_model_fails_the_scene_with_a_message_naming_the_model(
    harness: Harness,
) -> None:
    handle = await harness.start(request(model="llama9"))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    cause = root_application_error(failure.value)
    assert "llama9" in cause.message and "ollama pull llama9" in cause.message
    assert cause.type == "ModelNotFound"
    assert len(harness.studio.inputs("write_scene", handle.id)) == 1
    assert harness.studio.inputs("save_node", handle.id) == []
    assert (await handle.query(SceneWorkflow.progress))["stage"] == "failed"


async def test_missing_model_is_refused_before_any_work(harness: Harness) -> None:
    handle = await harness.start(request(model=None))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    cause = root_application_error(failure.value)
    assert cause.type == "BadRequest" and "model" in cause.message
    assert harness.studio.inputs("load_context", handle.id) == []


@pytest.mark.parametrize("sharing", [GpuSharing.SHARED, GpuSharing.SEPARATE])
async def test_render_waits_for_a_gpu_grant_and_no_scene_unloads_the_llm(
    harness: Harness, sharing: GpuSharing
) -> None:
    """Issue 13: the GPU scheduler switches the GPU between models; a scene no longer unloads
    the LLM itself (that unload hurt the other stories using it)."""
    wid, result = await harness.run(request(gpu_sharing=sharing))

    assert result.image_status is ImageStatus.DONE
    names = [name for name, w, _ in harness.studio.calls if w == wid]
    assert names.index("acquire_gpu") < names.index("render")
    assert harness.studio.inputs("acquire_gpu", wid)[0].holder == f"{wid}/render"
    assert "free_llm_vram" not in names


async def test_cancel_during_render_stops_comfyui_and_marks_the_node(harness: Harness) -> None:
    harness.studio.block_render = True
    handle = await harness.start(request())
    await wait_until(harness.studio.render_started.is_set, timeout=10, what="render to start")
    assert (await handle.query(SceneWorkflow.progress))["stage"] == "rendering"

    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert harness.studio.render_cancelled == [handle.id]  # ComfyUI was told to stop
    attach = harness.studio.inputs("attach_image", handle.id)
    assert [(a.status, a.error) for a in attach] == [(ImageStatus.FAILED, "cancelled by user")]
    node = harness.studio.nodes[attach[0].node_id]
    assert (node["image_status"], node["error"]) == (ImageStatus.FAILED, "cancelled by user")
    assert node["text"]  # the written scene is kept


async def test_a_cancel_that_comes_while_the_render_finishes_anyway_ends_the_scene_cancelled(
    harness: Harness,
) -> None:
    """ComfyUI completes a prompt whose cancel lands during its last node, and the render may
    return its picture before its next heartbeat brings the cancel: the user still gets a
    Cancelled scene, and the picture that exists is the one recorded on the node."""
    harness.studio.render_deaf_gate = gate = asyncio.Event()
    handle = await harness.start(request())
    await wait_until(harness.studio.render_started.is_set, timeout=10, what="render to start")
    await handle.cancel()

    async def cancel_reached_the_render() -> bool:
        history = await handle.fetch_history()
        return any(e.event_type is EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
                   for e in history.events)

    await wait_until(cancel_reached_the_render, timeout=10, what="the render's cancel request")
    gate.set()  # the render returns its picture: it never heard of the cancel
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    # e76591a: the scene completed with its picture, as if nobody had cancelled it.
    assert isinstance(failure.value.cause, CancelledError)
    assert (await handle.describe()).status is WorkflowExecutionStatus.CANCELED
    assert len(harness.studio.inputs("render", handle.id)) == 1  # one GPU job
    [attach] = harness.studio.inputs("attach_image", handle.id)
    assert attach.status is ImageStatus.DONE and attach.image_path and attach.sha256
    node = harness.studio.nodes[attach.node_id]
    assert node["image_status"] is ImageStatus.DONE and node["image_path"] == attach.image_path
    assert node["note"] == KEPT_AFTER_CANCEL_NOTE


async def test_a_retry_image_cancelled_while_its_render_finishes_anyway_ends_cancelled(
    harness: Harness,
) -> None:
    harness.studio.render_deaf_gate = gate = asyncio.Event()
    handle = await harness.client.start_workflow(
        RetryImageWorkflow.run,
        RetryImageRequest(node_id="node-7", template="scene", model="llama3.2"),
        id=f"retry-image-{uuid.uuid4()}", task_queue=harness.queue,
    )
    await wait_until(harness.studio.render_started.is_set, timeout=10, what="render to start")
    await handle.cancel()

    async def cancel_reached_the_render() -> bool:
        history = await handle.fetch_history()
        return any(e.event_type is EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED
                   for e in history.events)

    await wait_until(cancel_reached_the_render, timeout=10, what="the render's cancel request")
    gate.set()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()

    assert isinstance(failure.value.cause, CancelledError)  # e76591a: completed, as if not
    [attach] = harness.studio.inputs("attach_image", handle.id)
    assert attach.status is ImageStatus.DONE and attach.image_path
    assert attach.note and attach.note.endswith(KEPT_AFTER_CANCEL_NOTE)


async def test_seed_is_derived_from_the_workflow_id(harness: Harness) -> None:
    wid = f"scene-{uuid.uuid4()}"
    await harness.run(request(), wid)
    await harness.run(request(), wid)  # same id again (the first run is closed)
    other, _ = await harness.run(request())
    chosen, _ = await harness.run(request(seed=1234))

    seeds = [r.seed for r in harness.studio.inputs("render", wid)]
    assert len(seeds) == 2 and seeds[0] == seeds[1]
    # The image seed derives from the story and node (issue 6); the node from the workflow id.
    [saved] = harness.studio.inputs("save_node", wid)[:1]
    node = harness.studio.inputs("render", wid)[0].node_id
    assert seeds[0] == node_seed(saved.story_id, node)
    assert harness.studio.inputs("render", other)[0].seed != seeds[0]
    assert harness.studio.inputs("render", chosen)[0].seed == 1234


async def test_story_id_given_at_start_is_kept(harness: Harness) -> None:
    handle = await harness.client.start_workflow(
        SceneWorkflow.run,
        request(story_id="story-42"),
        id=f"scene-{uuid.uuid4()}",
        task_queue=harness.queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(STORY_ID, "story-42")]),
    )
    result = await handle.result()

    assert result.story_id == "story-42"
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(STORY_ID) == "story-42"
    assert attributes.get(NODE_ID) == result.node_id


async def test_cancel_during_render_on_the_real_dev_server(dev_env: WorkflowEnvironment) -> None:
    """The same cancel on the server users run (the test server's cancel path differs)."""
    studio = FakeStudio(block_render=True)
    async with AsyncExitStack() as stack:
        harness = Harness(dev_env.client, studio, await run_workers(stack, dev_env.client, studio))
        handle = await harness.start(request())
        await wait_until(studio.render_started.is_set, timeout=10, what="render to start")

        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    assert isinstance(failure.value.cause, CancelledError)
    assert studio.render_cancelled == [handle.id]
    [attach] = studio.inputs("attach_image", handle.id)
    assert studio.nodes[attach.node_id]["error"] == "cancelled by user"
