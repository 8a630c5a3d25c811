"""One illustrated scene without Temporal: the SceneWorkflow's steps, in order, in one function.

Same activity objects (clients, logic, database) as the worker builds, called one after the
other through ``InProcess``; what is left out is exactly what Temporal adds (history, task
dispatch, heartbeats to a server, retries).
"""

from __future__ import annotations

import uuid

from bench.inproc import InProcess
from workflows_temporal.contracts import (
    AttachImageInput,
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
    UpsertCharactersInput,
    UpsertCharactersResult,
    WriteSceneInput,
    WrittenScene,
)
from workflows_temporal.scene_prompts import build_image_prompt, derive_seed

__all__ = ["direct_scene"]


async def direct_scene(acts: InProcess, req: SceneRequest) -> RenderResult:
    """Load, write, save, cast, upsert, free VRAM, render, attach; returns the render result.

    Raises what a step raises (no retries: this is the plain-script baseline).
    """
    assert req.model is not None and req.template is not None
    wid = f"direct-{uuid.uuid4()}"
    seed = req.seed if req.seed is not None else derive_seed(wid)
    ctx: SceneContext = await acts.call("load_context", LoadContextInput(
        workflow_id=wid, direction=req.direction, story_id=req.story_id,
        parent_node_id=req.parent_node_id))
    written: WrittenScene = await acts.call("write_scene", WriteSceneInput(
        workflow_id=wid, model=req.model, premise=ctx.premise, direction=req.direction,
        summaries=ctx.summaries, characters=ctx.characters, style=req.style, seed=seed))
    saved: SavedNode = await acts.call("save_node", SaveNodeInput(
        workflow_id=wid, story_id=ctx.story_id, parent_node_id=ctx.parent_node_id,
        direction=req.direction, title=written.title, text=written.text,
        summary=written.summary, model=written.model, illustrate=True))
    cast: SceneCast = await acts.call("extract_cast", ExtractCastInput(
        workflow_id=wid, model=written.model, text=written.text,
        known_characters=ctx.characters, seed=seed))
    looks: UpsertCharactersResult = await acts.call("upsert_characters", UpsertCharactersInput(
        story_id=saved.story_id, node_id=saved.node_id, characters=cast.characters))
    if req.gpu_sharing == GpuSharing.SHARED:
        await acts.call("free_llm_vram", FreeVramInput(model=written.model))
    positive = build_image_prompt(cast, looks.characters, req.style)
    rendered: RenderResult = await acts.call("render", RenderInput(
        workflow_id=wid, node_id=saved.node_id, template=req.template, positive=positive,
        seed=seed))
    await acts.call("attach_image", AttachImageInput(
        node_id=saved.node_id, status=ImageStatus.DONE, image_path=rendered.image_path,
        sha256=rendered.sha256, prompt_id=rendered.prompt_id, template=rendered.template,
        seed=seed))
    return rendered
