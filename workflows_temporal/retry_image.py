"""RetryImageWorkflow: render a node's illustration again, with the settings its starter chose.

Deterministic orchestration only (ARCHITECTURE rule 6). The node's seed and image prompt are
reused; template, checkpoint, size and model are the request's (``settings_chosen``: the
starter's flags, else the node's record; older requests: the node's record first); a node that failed before its prompt was known (extract_cast failed)
gets the prompt from a fresh extract_cast. The workflow id differs from the scene's, so the
ComfyUI prompt id (uuid5 of workflow id / step) is new: a new job, never the failed one again.
Like SceneWorkflow, a render failing for good is recorded on the node, not raised.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.cancels import (
        KEPT_AFTER_CANCEL_NOTE,
        PictureKeptOnCancel,
        cancelled_after_render,
    )
    from workflows_temporal.contracts import (
        AttachImageInput,
        ExtractCastInput,
        FreeVramInput,
        GpuSharing,
        ImageParams,
        ImageStatus,
        RenderInput,
        RenderResult,
        RetryImageRequest,
        SceneCast,
        SceneResult,
        StepTimings,
        UpsertCharactersInput,
        UpsertCharactersResult,
    )
    from workflows_temporal.gpu_steps import GPU_SCHEDULER_PATCH, render_on_a_gpu
    from workflows_temporal.policies import WORKFLOW_FAILURE_TYPES, image_queue
    from workflows_temporal.scene_prompts import (
        REFERENCE_TEMPLATE,
        base_template,
        build_image_prompt,
    )
    from workflows_temporal.steps import failure_reason, final_error, run_step
    from workflows_temporal.story_memory import node_seed

__all__ = ["RetryImageWorkflow", "retry_workflow_id"]


def _timings(started: datetime, ended: datetime) -> StepTimings:
    """A retry is all illustration: its whole time, from workflow time (deterministic)."""
    seconds = round((ended - started).total_seconds(), 3)
    return StepTimings(illustrate_s=seconds, total_s=seconds)


def retry_workflow_id(node_id: str, attempt: int) -> str:
    """The id of the ``attempt``-th image retry of ``node_id`` (one at a time per number)."""
    return f"retry-image-{node_id}-{attempt}"


@workflow.defn(name="RetryImageWorkflow", failure_exception_types=WORKFLOW_FAILURE_TYPES)
class RetryImageWorkflow:
    """Render the image of ``RetryImageRequest.node_id`` again and attach it.

    Output ``SceneResult`` (image fields set; ``image_status`` done or failed). Fails
    (non-retryable ApplicationError) only when the node does not exist or the database is down
    for good. Every outcome leaves a note "retry-image N: ..." on the node. Query ``progress``.
    """

    def __init__(self) -> None:
        self._stage = "loading"

    @workflow.query
    def progress(self) -> dict[str, str]:
        return {"stage": self._stage}

    @workflow.run
    async def run(self, req: RetryImageRequest) -> SceneResult:
        try:
            params = await run_step(
                "load_image_params", req.node_id, f"load image parameters: {req.node_id}",
                ImageParams,
            )
        except ActivityError as err:
            raise final_error(err) from err
        if req.settings_chosen:  # the starter chose them (flags over the node's record)
            template, model = req.template, req.model
            checkpoint, width, height = req.checkpoint, req.image_width, req.image_height
        else:  # an older starter's request: the node's own settings win
            template, model = params.template or req.template, params.model or req.model
            checkpoint = params.checkpoint or req.checkpoint
            width = params.image_width or req.image_width
            height = params.image_height or req.image_height
        if template == REFERENCE_TEMPLATE:  # its reference upload belongs to the scene's cast
            template = base_template(template) if req.settings_chosen else req.template
        started = workflow.now()
        # A node whose render never got to record its seed (cancelled) gets the seed its scene
        # used: the node seed (story + node), as SceneWorkflow derives it.
        seed = params.seed if params.seed is not None else node_seed(params.story_id,
                                                                      params.node_id)
        settings: dict[str, Any] = {"checkpoint": checkpoint, "image_width": width,
                                    "image_height": height}
        base = SceneResult(
            story_id=params.story_id, node_id=params.node_id,
            workflow_id=workflow.info().workflow_id, title=params.title,
            image_status=ImageStatus.FAILED,
        )
        prompt: str | None = params.prompt
        try:
            if not prompt:
                prompt = await self._prompt_from_text(model, params, seed)
            scheduled = workflow.patched(GPU_SCHEDULER_PATCH)  # issue 13: no per-render unload
            if req.gpu_sharing == GpuSharing.SHARED and not scheduled:
                self._stage = "freeing_vram"
                await run_step("free_llm_vram", FreeVramInput(model=model),
                               "free VRAM before the retry")
            self._stage = "rendering"
            render_input = RenderInput(
                workflow_id=workflow.info().workflow_id, node_id=params.node_id,
                template=template, positive=prompt, seed=seed,
                checkpoint=checkpoint, width=width, height=height)
            if scheduled:
                rendered = await render_on_a_gpu(
                    render_input, f"render again: {template} seed {seed}", req.gpu)
            else:
                rendered = await run_step(
                    "render", render_input, f"render again: {template} seed {seed}",
                    RenderResult,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    task_queue=image_queue(req.gpu),
                )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            reason = failure_reason(err)
            await self._attach(AttachImageInput(
                node_id=params.node_id, status=ImageStatus.FAILED, error=reason, seed=seed,
                template=template, prompt=prompt, **settings,
                note=f"retry-image {req.attempt}: failed again: {reason}",
            ))
            return base.model_copy(update={"image_error": reason,
                                           "timings": _timings(started, workflow.now())})
        note = f"retry-image {req.attempt}: rendered again"
        if rendered.resubmitted:
            note += "; ComfyUI lost the job; it was submitted again"
        cancelled = cancelled_after_render()
        if cancelled:
            note += f"; {KEPT_AFTER_CANCEL_NOTE}"
        await self._attach(AttachImageInput(
            node_id=params.node_id, status=ImageStatus.DONE, image_path=rendered.image_path,
            sha256=rendered.sha256, prompt_id=rendered.prompt_id, template=rendered.template,
            seed=seed, prompt=prompt, note=note, **settings,
        ))
        if cancelled:  # recorded, never an unrecorded file; the retry still ends Cancelled
            self._stage = "cancelled"
            raise PictureKeptOnCancel(KEPT_AFTER_CANCEL_NOTE)
        self._stage = "done"
        return base.model_copy(update={
            "image_status": ImageStatus.DONE, "image_path": rendered.image_path,
            "image_sha256": rendered.sha256, "timings": _timings(started, workflow.now()),
        })

    async def _prompt_from_text(self, model: str, params: ImageParams, seed: int) -> str:
        """The image prompt the scene would have built: cast and canonical looks of the text."""
        self._stage = "casting"
        cast = await run_step(
            "extract_cast",
            ExtractCastInput(workflow_id=workflow.info().workflow_id, model=model,
                             text=params.text, seed=seed),
            f"extract cast: {params.title}",
            SceneCast,
        )
        looks = await run_step(
            "upsert_characters",
            UpsertCharactersInput(story_id=params.story_id, node_id=params.node_id,
                                  characters=cast.characters),
            "upsert characters",
            UpsertCharactersResult,
        )
        return build_image_prompt(cast, looks.characters, "")

    async def _attach(self, inp: AttachImageInput) -> None:
        self._stage = "attaching"
        try:
            await run_step("attach_image", inp, f"attach image: {inp.status.value}")
        except ActivityError as err:
            raise ApplicationError(
                f"recording the image of node {inp.node_id} failed: {failure_reason(err)}",
                type="StoreError", non_retryable=True,
            ) from err
