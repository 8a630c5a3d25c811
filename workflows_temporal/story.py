"""StoryWorkflow: several scenes in a row, each a child SceneWorkflow continuing the last node.

Deterministic orchestration only. Child ids derive from the story's workflow id and the scene's
index, so seeds and ComfyUI prompt ids stay stable across retries and continue-as-new.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.contracts import (
        ImageStatus,
        SceneRequest,
        SceneResult,
        StoryRequest,
        StoryResult,
    )
    from workflows_temporal.scene import STORY_ID, SceneWorkflow
    from workflows_temporal.scene_prompts import first_words
    from workflows_temporal.steps import final_error

__all__ = ["SCENES_PER_RUN", "StoryWorkflow", "scene_workflow_id"]

# Continue-as-new after this many scenes, so one run's history stays small (each child adds
# about 8 events to the parent; 20 scenes is far below Temporal's limits and cheap to replay).
SCENES_PER_RUN = 20


def scene_workflow_id(story_workflow_id: str, index: int) -> str:
    """The child SceneWorkflow id of scene ``index`` (0-based) of a story run."""
    return f"{story_workflow_id}/scene-{index + 1:04d}"


@workflow.defn(name="StoryWorkflow")
class StoryWorkflow:
    """Write ``req.directions`` in order, one child SceneWorkflow each.

    Signals ``pause``/``resume`` hold the story between scenes (the running scene finishes).
    Cancel: the running scene is cancelled (its node records why) and the story ends Cancelled.
    Fails with the scene's reason when a scene fails (writing or saving); a failed image does
    not stop the story. Continues as new every ``SCENES_PER_RUN`` scenes.
    """

    def __init__(self) -> None:
        self._paused = False
        self._stage = "starting"
        self._story_id: str | None = None
        self._node_ids: list[str] = []
        self._total = 0
        self._current: str | None = None

    @workflow.signal
    def pause(self) -> None:
        """Hold the story after the running scene."""
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        """Go on with the next scene."""
        self._paused = False

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """stage (writing | paused | done | failed), story id, scenes done/total, last node."""
        return {
            "stage": self._stage,
            "story_id": self._story_id,
            "scenes_done": len(self._node_ids),
            "scenes_total": self._total,
            "last_node_id": self._node_ids[-1] if self._node_ids else None,
            "current_scene": self._current,
            "paused": self._paused,
        }

    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        done = len(self._node_ids)
        workflow.set_current_details(
            f"**stage**: {stage}\n\n**scenes**: {done} of {self._total}"
            + (f"\n\n**story**: `{self._story_id}`" if self._story_id else "")
        )

    @workflow.run
    async def run(self, req: StoryRequest) -> StoryResult:
        wid = workflow.info().workflow_id
        self._paused = self._paused or req.paused
        self._story_id = req.story_id
        self._node_ids = list(req.node_ids)
        self._total = len(req.directions)
        parent = req.node_ids[-1] if req.node_ids else req.parent_node_id
        images_failed = req.images_failed
        for index in range(req.next_index, len(req.directions)):
            if index - req.next_index >= SCENES_PER_RUN:
                workflow.continue_as_new(
                    req.model_copy(
                        update={
                            "story_id": self._story_id,
                            "next_index": index,
                            "node_ids": self._node_ids,
                            "images_failed": images_failed,
                            "paused": self._paused,
                        }
                    )
                )
            if self._paused:
                self._set_stage("paused")
                await workflow.wait_condition(lambda: not self._paused)
            self._set_stage("writing")
            scene = await self._scene(req, wid, index, parent)
            if self._story_id is None:
                self._story_id = scene.story_id
                workflow.upsert_search_attributes([STORY_ID.value_set(scene.story_id)])
            self._node_ids.append(scene.node_id)
            parent = scene.node_id
            images_failed += scene.image_status == ImageStatus.FAILED
        self._current = None
        self._set_stage("done")
        assert self._story_id is not None  # directions is never empty
        return StoryResult(
            story_id=self._story_id,
            node_ids=self._node_ids,
            last_node_id=parent,
            images_failed=images_failed,
        )

    async def _scene(
        self, req: StoryRequest, wid: str, index: int, parent: str | None
    ) -> SceneResult:
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
        )
        attributes = (
            TypedSearchAttributes([SearchAttributePair(STORY_ID, self._story_id)])
            if self._story_id
            else None
        )
        try:
            return await workflow.execute_child_workflow(
                SceneWorkflow.run,
                scene_req,
                id=child_id,
                static_summary=f"scene {index + 1}: {first_words(direction)}",
                search_attributes=attributes,
            )
        except ChildWorkflowError as err:
            if is_cancelled_exception(err):
                raise
            self._set_stage("failed")
            raise final_error(err, f"scene {index + 1} failed: ") from err
