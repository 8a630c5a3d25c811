"""SceneWorkflow: write one scene, save it as a node, and (optionally) illustrate it.

Deterministic orchestration only (ARCHITECTURE rule 6): activities are called by name, with
the options of ``policies.STEPS``; seeds derive from the workflow id; times come from
``workflow.now()``. A failed illustration marks the node and the scene still succeeds (rule 7).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.cancels import (
        KEPT_AFTER_CANCEL_NOTE,
        PictureKeptOnCancel,
        cancelled_after_render,
    )
    from workflows_temporal.contracts import (
        AttachImageInput,
        CharacterLook,
        ExtractCastInput,
        FreeVramInput,
        GpuSharing,
        ImageStatus,
        LoadContextInput,
        RenderInput,
        RenderResult,
        SavedNode,
        SaveNodeInput,
        SceneCast,
        SceneContext,
        SceneRequest,
        SceneResult,
        StepTimings,
        UpsertCharactersInput,
        UpsertCharactersResult,
        WriteSceneInput,
        WrittenScene,
    )
    from workflows_temporal.gpu_steps import GPU_SCHEDULER_PATCH, render_on_a_gpu
    from workflows_temporal.policies import WORKFLOW_FAILURE_TYPES, image_queue
    from workflows_temporal.scene_memory import (
        MEMORY_PATCH,
        NODE_SEED_PATCH,
        notify_parent,
        recall,
        remember,
    )
    from workflows_temporal.scene_prompts import (
        REFERENCE_TEMPLATE,
        build_image_prompt,
        derive_seed,
        first_words,
        pick_reference,
        reference_variant,
    )
    from workflows_temporal.steps import failure_reason, failure_type, final_error, run_step
    from workflows_temporal.story_memory import node_seed

__all__ = ["NODE_ID", "STORY_ID", "SceneWorkflow"]

STORY_ID = SearchAttributeKey.for_keyword("StoryId")
NODE_ID = SearchAttributeKey.for_keyword("NodeId")
# Render failures that mean "this template/reference cannot work": retry with the plain template.
REFERENCE_REJECTIONS = frozenset({"ComfyExecutionError", "ComfyValidationError", "TemplateError"})
CANCELLED_NOTE = "cancelled by user"
# Issue 11: only a template with a reference variant renders a character's picture with it.
REFERENCE_VARIANT_PATCH = "reference-variant-only"


def _seconds(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds(), 3)


def _image_settings(req: SceneRequest) -> dict[str, Any]:
    """The request's image settings as AttachImageInput fields (kept on the node)."""
    return {
        "checkpoint": req.checkpoint,
        "image_width": req.image_width,
        "image_height": req.image_height,
    }


def _story_label(req: SceneRequest) -> str:
    """Which story the scene belongs to, for the UI: given, a branch's, or a new one."""
    if req.story_id:
        return f"story {req.story_id}"
    if req.parent_node_id:
        return f"branch from node {req.parent_node_id}"
    return "new story"


def _check_request(req: SceneRequest) -> None:
    """Refuse a request the starter should have completed: the workflow reads no settings."""
    if not req.direction.strip():
        raise ApplicationError(
            "SceneRequest.direction is blank: say what happens in the scene",
            type="BadRequest",
            non_retryable=True,
        )
    if not req.model:
        raise ApplicationError(
            "SceneRequest.model is not set: the starter must choose the text model "
            "(the storyloom CLI fills it from STORYLOOM_TEXT_MODEL)",
            type="BadRequest",
            non_retryable=True,
        )
    if req.illustrate and not req.template:
        raise ApplicationError(
            "SceneRequest.template is not set: the starter must choose the ComfyUI template "
            "(the storyloom CLI fills it from STORYLOOM_TEMPLATE)",
            type="BadRequest",
            non_retryable=True,
        )


@workflow.defn(name="SceneWorkflow", failure_exception_types=WORKFLOW_FAILURE_TYPES)
class SceneWorkflow:
    """One scene, start to end. Input ``SceneRequest``; output ``SceneResult``.

    Fails (ApplicationError carrying the cause's message) when loading, writing or saving fails
    for good; never fails because of the image: the node gets ``image_status=failed`` and the
    reason. Cancelled: the node, if it exists, records "cancelled by user" before the workflow
    ends Cancelled; if the render finished anyway (a cancel during ComfyUI's last node is too
    late) and returned its picture, the picture is recorded with KEPT_AFTER_CANCEL_NOTE and the
    workflow still ends Cancelled. Query ``progress`` for the stage.
    """

    def __init__(self) -> None:
        self._stage = "loading"
        self._story_id: str | None = None
        self._node_id: str | None = None
        self._title: str | None = None
        self._image_status: ImageStatus | None = None
        self._note: str | None = None
        self._image_queue = image_queue()
        self._scene_number = 0  # depth + 1, known after load_context (for UI summaries)
        self._gpu = ""
        self._scheduled = False  # renders go through the GPU scheduler (issue 13)

    @workflow.query
    def progress(self) -> dict[str, Any]:
        """Where the scene is: stage, story and node ids, title, image status."""
        return {
            "stage": self._stage,
            "story_id": self._story_id,
            "node_id": self._node_id,
            "title": self._title,
            "image_status": self._image_status.value if self._image_status else None,
        }

    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        lines = [f"**stage**: {stage}"]
        if self._scene_number:
            lines.append(f"**scene**: {self._scene_number}")
        if self._title:
            lines.append(f"**title**: {self._title}")
        if self._story_id:
            lines.append(f"**story**: `{self._story_id}`")
        if self._node_id:
            lines.append(f"**node**: `{self._node_id}`")
        workflow.set_current_details("\n\n".join(lines))

    @workflow.run
    async def run(self, req: SceneRequest) -> SceneResult:
        _check_request(req)
        assert req.model is not None
        self._image_queue = image_queue(req.gpu)  # one task queue per GPU (rule 8)
        self._gpu = req.gpu
        wid = workflow.info().workflow_id
        seed = req.seed if req.seed is not None else derive_seed(wid)
        started = workflow.now()
        self._set_stage("loading")
        try:
            ctx = await run_step(
                "load_context",
                LoadContextInput(
                    workflow_id=wid,
                    direction=req.direction,
                    story_id=req.story_id,
                    parent_node_id=req.parent_node_id,
                ),
                f"load context: {_story_label(req)}",
                SceneContext,
            )
            self._story_id = ctx.story_id
            self._scene_number = ctx.depth + 1
            summaries, memories = ctx.summaries, list[str]()
            if req.embed_model and workflow.patched(MEMORY_PATCH):
                self._set_stage("recalling")
                summaries, memories = await recall(req, ctx)
            self._set_stage("writing")
            write_started = workflow.now()
            written = await run_step(
                "write_scene",
                WriteSceneInput(
                    workflow_id=wid,
                    model=req.model,
                    premise=ctx.premise,
                    direction=req.direction,
                    summaries=summaries,
                    characters=ctx.characters,
                    style=req.style,
                    seed=seed,
                    memories=memories,
                    fallback_models=req.fallback_models,
                ),
                f"write scene {self._scene_number}: {first_words(req.direction)}",
                WrittenScene,
            )
            write_s = _seconds(write_started, workflow.now())
            self._title = written.title
            self._set_stage("saving")
            saved = await run_step(
                "save_node",
                self._save_input(req, wid, ctx, written),
                f"save node: {written.title}",
                SavedNode,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            self._set_stage("failed")
            raise final_error(err) from err
        self._node_id = saved.node_id
        self._mark_search_attributes(saved)
        saved_at = workflow.now()  # the illustrate phase starts here (memory steps included)
        text_s = _seconds(started, saved_at)
        if req.notify_parent:
            await notify_parent(saved)
        if req.embed_model and workflow.patched(MEMORY_PATCH):
            await remember(req, saved, written.summary)
        if req.seed is None and workflow.patched(NODE_SEED_PATCH):
            seed = node_seed(saved.story_id, saved.node_id)  # the image seed: story + node

        result = SceneResult(
            story_id=saved.story_id,
            node_id=saved.node_id,
            workflow_id=wid,
            title=written.title,
            image_status=ImageStatus.SKIPPED,
        )
        if req.illustrate:
            try:
                result = await self._illustrate(req, wid, ctx, written, result, seed)
            except BaseException as err:  # asyncio.CancelledError is a BaseException
                if is_cancelled_exception(err):
                    if not isinstance(err, PictureKeptOnCancel):
                        await self._record_cancel(saved.node_id, seed)
                    raise
                if isinstance(err, ActivityError):  # attach_image failed for good: the DB is down
                    self._set_stage("failed")
                    prefix = f"recording the image of node {saved.node_id} failed: "
                    raise final_error(err, prefix) from err
                raise
        self._image_status = result.image_status
        now = workflow.now()
        result.timings = StepTimings(
            text_s=text_s,
            write_s=write_s,
            illustrate_s=_seconds(saved_at, now) if req.illustrate else 0.0,
            total_s=_seconds(started, now),
        )
        self._set_stage("done")
        return result

    def _save_input(
        self, req: SceneRequest, wid: str, ctx: SceneContext, written: WrittenScene
    ) -> SaveNodeInput:
        return SaveNodeInput(
            workflow_id=wid,
            story_id=ctx.story_id,
            parent_node_id=ctx.parent_node_id if req.parent_node_id is None else req.parent_node_id,
            direction=req.direction,
            title=written.title,
            text=written.text,
            summary=written.summary,
            model=written.model,
            illustrate=req.illustrate,
            note=written.fallback_note,
        )

    def _mark_search_attributes(self, saved: SavedNode) -> None:
        updates = [NODE_ID.value_set(saved.node_id)]
        if workflow.info().typed_search_attributes.get(STORY_ID) is None:
            updates.append(STORY_ID.value_set(saved.story_id))
        workflow.upsert_search_attributes(updates)

    async def _illustrate(
        self,
        req: SceneRequest,
        wid: str,
        ctx: SceneContext,
        written: WrittenScene,
        result: SceneResult,
        seed: int,
    ) -> SceneResult:
        """Steps 4-8. A step failing for good becomes ``image_status=failed`` on the node."""
        self._image_status = ImageStatus.PENDING
        positive: str | None = None
        # Issue 13: the GPU scheduler switches the GPU between the LLM and the image model
        # (no per-scene unload) and chooses the GPU of each render.
        self._scheduled = workflow.patched(GPU_SCHEDULER_PATCH)
        try:
            self._set_stage("casting")
            cast = await run_step(
                "extract_cast",
                ExtractCastInput(
                    workflow_id=wid,
                    model=written.model,
                    text=written.text,
                    known_characters=ctx.characters,
                    seed=seed,
                ),
                f"extract cast: {written.title}",
                SceneCast,
            )
            names = ", ".join(c.name for c in cast.characters) or "nobody"
            looks = (
                await run_step(
                    "upsert_characters",
                    UpsertCharactersInput(
                        story_id=result.story_id, node_id=result.node_id, characters=cast.characters
                    ),
                    f"upsert characters: {names}",
                    UpsertCharactersResult,
                )
            ).characters
            if req.gpu_sharing == GpuSharing.SHARED and not self._scheduled:
                self._set_stage("freeing_vram")
                await run_step(
                    "free_llm_vram",
                    FreeVramInput(model=written.model),
                    f"free VRAM: unload {written.model}",
                )
            self._set_stage("rendering")
            self._image_status = ImageStatus.RENDERING
            positive = build_image_prompt(cast, looks, req.style)
            rendered = await self._render_with_fallback(
                req, wid, result.node_id, positive, looks, seed
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            reason = failure_reason(err)
            await self._attach(
                AttachImageInput(
                    node_id=result.node_id,
                    status=ImageStatus.FAILED,
                    error=reason,
                    seed=seed,
                    note=self._note,
                    prompt=positive,
                    **_image_settings(req),
                )
            )
            return result.model_copy(
                update={"image_status": ImageStatus.FAILED, "image_error": reason}
            )
        note = self._note
        if rendered.resubmitted:
            lost = "ComfyUI lost the job; it was submitted again"
            note = f"{note}; {lost}" if note else lost
        cancelled = cancelled_after_render()
        if cancelled:
            note = f"{note}; {KEPT_AFTER_CANCEL_NOTE}" if note else KEPT_AFTER_CANCEL_NOTE
        await self._attach(
            AttachImageInput(
                node_id=result.node_id,
                status=ImageStatus.DONE,
                image_path=rendered.image_path,
                sha256=rendered.sha256,
                prompt_id=rendered.prompt_id,
                template=rendered.template,
                seed=seed,
                note=note,
                prompt=positive,
                **_image_settings(req),
            )
        )
        if cancelled:  # the picture is recorded (never an unrecorded file); the scene is not
            self._set_stage("cancelled")
            raise PictureKeptOnCancel(KEPT_AFTER_CANCEL_NOTE)
        return result.model_copy(
            update={
                "image_status": ImageStatus.DONE,
                "image_path": rendered.image_path,
                "image_sha256": rendered.sha256,
            }
        )

    async def _render_with_fallback(
        self,
        req: SceneRequest,
        wid: str,
        node_id: str,
        positive: str,
        looks: list[CharacterLook],
        seed: int,
    ) -> RenderResult:
        """Render with the reference template when a present character has a picture; if
        ComfyUI rejects it for good, render once more with the plain template and note why."""
        assert req.template is not None
        plain = RenderInput(
            workflow_id=wid,
            node_id=node_id,
            template=req.template,
            positive=positive,
            seed=seed,
            checkpoint=req.checkpoint,
            width=req.image_width,
            height=req.image_height,
        )
        reference = pick_reference(looks)
        variant = reference_variant(req.template)
        # Issue 11: a template without a reference variant (probe) renders as configured.
        if reference is None or (variant is None and workflow.patched(REFERENCE_VARIANT_PATCH)):
            return await self._render(plain)
        try:
            return await self._render(
                plain.model_copy(
                    update={
                        "template": variant or REFERENCE_TEMPLATE,
                        "reference_image": reference.reference_image,
                    }
                )
            )
        except ActivityError as err:
            if is_cancelled_exception(err) or failure_type(err) not in REFERENCE_REJECTIONS:
                raise
            self._note = (
                f"reference image rejected: {failure_reason(err)}; fell back to {req.template}"
            )
            # A distinct step gives the fallback its own deterministic ComfyUI prompt_id.
            return await self._render(plain.model_copy(update={"step": "render-fallback"}))

    async def _render(self, inp: RenderInput) -> RenderResult:
        summary = f"render scene {self._scene_number} ({inp.template}, seed {inp.seed})"
        if self._scheduled:
            return await render_on_a_gpu(inp, summary, self._gpu)
        return await run_step(
            "render",
            inp,
            f"render scene {self._scene_number} ({inp.template}, seed {inp.seed})",
            RenderResult,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            task_queue=self._image_queue,
        )

    async def _attach(self, inp: AttachImageInput) -> None:
        self._set_stage("attaching")
        self._image_status = inp.status
        await run_step("attach_image", inp, f"attach image: {inp.status.value}")

    async def _record_cancel(self, node_id: str, seed: int) -> None:
        """Cleanup after a cancel: the node says why it has no image (the workflow is already
        cancelled, but activities may still be scheduled)."""
        await self._attach(
            AttachImageInput(
                node_id=node_id,
                status=ImageStatus.FAILED,
                error=CANCELLED_NOTE,
                note=self._note,
                seed=seed,  # so that retry-image renders with the same seed
            )
        )
        self._set_stage("failed")
