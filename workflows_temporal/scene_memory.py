"""SceneWorkflow's story-memory and story-link steps: recall before writing, remember after
saving, and tell the parent StoryWorkflow that the node exists (pipelining).

Deterministic orchestration only; called by SceneWorkflow inside ``workflow.patched`` guards.
Memory is a help, not a requirement: a failing memory step is logged and the scene goes on.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.contracts import (
        EmbeddedTexts,
        EmbedTextsInput,
        RecalledContext,
        RecallMemoriesInput,
        SavedNode,
        SceneContext,
        SceneRequest,
        SceneSaved,
        StoreEmbeddingInput,
    )
    from workflows_temporal.scene_prompts import first_words
    from workflows_temporal.steps import failure_reason, run_step
    from workflows_temporal.story_memory import needs_recall

__all__ = ["MEMORY_PATCH", "NODE_SEED_PATCH", "notify_parent", "recall", "remember"]

MEMORY_PATCH = "story-memory"
NODE_SEED_PATCH = "node-seed"
SCENE_SAVED_SIGNAL = "scene_saved"


async def recall(req: SceneRequest, ctx: SceneContext) -> tuple[list[str], list[str]]:
    """(rolling summaries, recalled memories) for the writer. Within the budget: the path's
    summaries as they are and no memories; beyond it: embed the direction and ask the store."""
    if req.embed_model is None or ctx.parent_node_id is None:
        return ctx.summaries, []
    if not needs_recall(ctx.summaries, req.context_budget_tokens):
        return ctx.summaries, []
    try:
        query = await run_step(
            "embed_texts",
            EmbedTextsInput(model=req.embed_model, texts=[req.direction]),
            f"embed direction: {first_words(req.direction)}",
            EmbeddedTexts,
        )
        recalled = await run_step(
            "recall_memories",
            RecallMemoriesInput(
                story_id=ctx.story_id,
                parent_node_id=ctx.parent_node_id,
                query=query.vectors[0],
                budget_tokens=req.context_budget_tokens,
            ),
            f"recall memories: {len(ctx.summaries)} scenes over budget",
            RecalledContext,
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        workflow.logger.warning("story memory unavailable: %s", failure_reason(err))
        return ctx.summaries[-3:], []
    return recalled.recent, recalled.memories


async def remember(req: SceneRequest, saved: SavedNode, summary: str) -> None:
    """Embed the node's summary and store it, so later scenes can recall this one."""
    if req.embed_model is None or not summary.strip():
        return
    try:
        embedded = await run_step(
            "embed_texts",
            EmbedTextsInput(model=req.embed_model, texts=[summary]),
            f"embed summary of node {saved.node_id}",
            EmbeddedTexts,
        )
        await run_step(
            "store_embedding",
            StoreEmbeddingInput(
                node_id=saved.node_id, vector=embedded.vectors[0], model=req.embed_model
            ),
            f"store embedding: node {saved.node_id}",
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        workflow.logger.warning("summary of %s not remembered: %s", saved.node_id,
                                failure_reason(err))


async def notify_parent(saved: SavedNode) -> None:
    """Signal the parent StoryWorkflow that this scene's node exists; a closed parent is fine."""
    parent = workflow.info().parent
    if parent is None:
        return
    try:
        await workflow.get_external_workflow_handle(parent.workflow_id).signal(
            SCENE_SAVED_SIGNAL,
            SceneSaved(
                workflow_id=workflow.info().workflow_id,
                node_id=saved.node_id,
                story_id=saved.story_id,
            ),
        )
    except ApplicationError as err:  # the parent closed meanwhile: nobody waits for the news
        workflow.logger.info("parent not signalled: %s", err)
