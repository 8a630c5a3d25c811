"""StoryWorkflow: several scenes in a row, each a child SceneWorkflow continuing the last node.

Deterministic orchestration only. Child ids derive from the story's workflow id and the scene's
index, so seeds and ComfyUI prompt ids stay stable across retries and continue-as-new.
The scenes are pipelined: a child signals ``scene_saved`` as soon as its node exists, and the
next child starts writing while the previous one is illustrated (at most one scene illustrating,
one writing). With ``shared`` (one GPU for text and pictures) the GPU scheduler keeps the text
model and the renders apart on the GPU, and pipelining lets it batch the waiting texts of many
stories between two model switches; runs started before the scheduler strictly alternate.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.contracts import (
        GpuSharing,
        ImageStatus,
        SceneRequest,
        SceneResult,
        SceneSaved,
        StoryRequest,
        StoryResult,
    )
    from workflows_temporal.policies import WORKFLOW_FAILURE_TYPES
    from workflows_temporal.scene import STORY_ID, SceneWorkflow
    from workflows_temporal.scene_prompts import first_words, without_scene_number
    from workflows_temporal.steps import final_error

__all__ = ["SCENES_PER_RUN", "StoryWorkflow", "scene_workflow_id"]

# Continue-as-new after this many scenes, so one run's history stays small (each child adds
# about 8 events to the parent; 20 scenes is far below Temporal's limits and cheap to replay).
SCENES_PER_RUN = 20

Child = workflow.ChildWorkflowHandle[Any, SceneResult]
# Issue 13: with the GPU scheduler, shared-GPU stories pipeline too (before: strict alternation).
SHARED_PIPELINE_PATCH = "shared-gpu-pipeline"


def scene_workflow_id(story_workflow_id: str, index: int) -> str:
    """The child SceneWorkflow id of scene ``index`` (0-based) of a story run."""
    return f"{story_workflow_id}/scene-{index + 1:04d}"


@workflow.defn(name="StoryWorkflow", failure_exception_types=WORKFLOW_FAILURE_TYPES)
class StoryWorkflow:
    """Write ``req.directions`` in order, one child SceneWorkflow each.

    Signals ``pause``/``resume`` hold the story between scenes (running scenes finish).
    Cancel: the running scenes are cancelled (their nodes record why) and the story ends
    Cancelled. Fails with the scene's reason when a scene fails (writing or saving); a failed
    image does not stop the story. Continues as new every ``SCENES_PER_RUN`` scenes. The result
    lists every scene with its phase timings and the story's makespan.
    """

    def __init__(self) -> None:
        self._paused = False
        self._stage = "starting"
        self._story_id: str | None = None
        self._node_ids: list[str] = []
        self._scenes: list[SceneResult] = []
        self._saved: dict[str, SceneSaved] = {}
        self._total = 0
        self._index = 0
        self._current: str | None = None
        self._illustrating: str | None = None

    @workflow.signal
    def pause(self) -> None:
        """Hold the story before the next scene starts."""
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        """Go on with the next scene."""
        self._paused = False

    @workflow.signal
    def scene_saved(self, saved: SceneSaved) -> None:
        """From a child: its node exists, so the next scene may start writing."""
        self._saved[saved.workflow_id] = saved

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """stage (writing | paused | done | failed), story id, scene k of N, children running."""
        return {
            "stage": self._stage,
            "story_id": self._story_id,
            "scene": self._index + 1,
            "scenes_done": len(self._scenes),
            "scenes_saved": len(self._node_ids),
            "scenes_total": self._total,
            "last_node_id": self._node_ids[-1] if self._node_ids else None,
            "current_scene": self._current,
            "illustrating_scene": self._illustrating,
            "paused": self._paused,
        }

    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        workflow.set_current_details(
            f"**stage**: {stage}\n\n**scene**: {self._index + 1} of {self._total}"
            + (f"\n\n**story**: `{self._story_id}`" if self._story_id else "")
        )

    def _learn_story(self, story_id: str) -> None:
        if self._story_id is None:
            self._story_id = story_id
            workflow.upsert_search_attributes([STORY_ID.value_set(story_id)])

    @workflow.run
    async def run(self, req: StoryRequest) -> StoryResult:
        wid = workflow.info().workflow_id
        started = workflow.now()
        self._paused = self._paused or req.paused
        self._story_id = req.story_id
        self._node_ids = list(req.node_ids)
        self._scenes = list(req.scenes)
        self._total = len(req.directions)
        parent = req.node_ids[-1] if req.node_ids else req.parent_node_id
        pipelined = req.illustrate and (
            req.gpu_sharing == GpuSharing.SEPARATE or workflow.patched(SHARED_PIPELINE_PATCH))
        inflight: list[Child] = []
        try:
            for index in range(req.next_index, len(req.directions)):
                self._index = index
                if index - req.next_index >= SCENES_PER_RUN:
                    await self._drain(inflight, keep=0)
                    workflow.continue_as_new(self._carry(req, index, started))
                if self._paused:
                    self._set_stage("paused")
                    await workflow.wait_condition(lambda: not self._paused)
                await self._drain(inflight, keep=1)  # at most one scene illustrating
                self._set_stage("writing")
                child = await self._start(req, wid, index, parent, notify=pipelined)
                inflight.append(child)
                if pipelined:
                    await workflow.wait_condition(
                        lambda c=child: c.id in self._saved or c.done()  # type: ignore[misc]
                    )
                if child.id in self._saved:
                    saved = self._saved[child.id]
                    self._learn_story(saved.story_id)
                    self._node_ids.append(saved.node_id)
                    parent = saved.node_id
                    self._illustrating = child.id
                else:
                    await self._drain(inflight, keep=0)
                    parent = self._node_ids[-1]
            await self._drain(inflight, keep=0)
        except BaseException as err:  # asyncio.CancelledError is a BaseException
            if is_cancelled_exception(err):  # cancel the scenes still running, and wait for them
                for child in inflight:
                    child.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)
            raise
        self._current = self._illustrating = None
        self._set_stage("done")
        assert self._story_id is not None  # directions is never empty
        return StoryResult(
            story_id=self._story_id,
            node_ids=self._node_ids,
            last_node_id=parent,
            images_failed=sum(s.image_status == ImageStatus.FAILED for s in self._scenes),
            scenes=self._scenes,
            makespan_s=round(req.elapsed_s + (workflow.now() - started).total_seconds(), 3),
        )

    def _carry(self, req: StoryRequest, index: int, started: Any) -> StoryRequest:
        return req.model_copy(
            update={
                "story_id": self._story_id,
                "next_index": index,
                "node_ids": self._node_ids,
                "scenes": self._scenes,
                "images_failed": sum(s.image_status == ImageStatus.FAILED for s in self._scenes),
                "paused": self._paused,
                "elapsed_s": req.elapsed_s + (workflow.now() - started).total_seconds(),
            }
        )

    async def _drain(self, inflight: list[Child], *, keep: int) -> None:
        """Wait, oldest first, until at most ``keep`` children are running; record each."""
        while len(inflight) > keep:
            child = inflight.pop(0)
            try:
                scene = await child
            except ChildWorkflowError as err:
                if is_cancelled_exception(err):
                    raise
                self._set_stage("failed")
                number = int(child.id.rsplit("-", 1)[1])
                raise final_error(err, f"scene {number} failed: ") from err
            self._learn_story(scene.story_id)
            if child.id not in self._saved:
                self._node_ids.append(scene.node_id)
            self._scenes.append(scene)
            if self._illustrating == child.id:
                self._illustrating = None

    async def _start(
        self, req: StoryRequest, wid: str, index: int, parent: str | None, *, notify: bool
    ) -> Child:
        direction = req.directions[index]
        child_id = scene_workflow_id(wid, index)
        self._current = child_id
        scene_req = SceneRequest(
            direction=direction,
            story_id=self._story_id,
            parent_node_id=parent,
            illustrate=req.illustrate,
            model=req.model,
            template=req.template,
            style=req.style,
            gpu_sharing=req.gpu_sharing,
            embed_model=req.embed_model,
            context_budget_tokens=req.context_budget_tokens,
            notify_parent=notify,
            checkpoint=req.checkpoint,
            image_width=req.image_width,
            image_height=req.image_height,
            fallback_models=req.fallback_models,
        )
        attributes = (
            TypedSearchAttributes([SearchAttributePair(STORY_ID, self._story_id)])
            if self._story_id
            else None
        )
        return await workflow.start_child_workflow(
            SceneWorkflow.run,
            scene_req,
            id=child_id,
            static_summary=f"scene {index + 1}: {first_words(without_scene_number(direction))}",
            static_details=(
                f"**scene**: {index + 1} of {len(req.directions)}\n\n**direction**: {direction}"
                f"\n\n**model**: {req.model}\n\n**template**: "
                f"{req.template if req.illustrate else '(no illustration)'}"
            ),
            search_attributes=attributes,
        )
