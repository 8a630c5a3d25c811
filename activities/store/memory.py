"""Story memory in the store: node summary embeddings, and recall of relevant earlier scenes.

Two activities on the db queue (they never call Ollama; the vectors come from the llm queue's
``embed_texts``): ``store_embedding`` and ``recall_memories``.
"""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.calllog import CallTimer, call_context
from activities.errors import StoreError, StoryloomError, to_application_error
from activities.store.lookups import path_nodes, require_node, require_node_of_story
from activities.store.models import Node
from activities.store.transactions import Transactions
from workflows_temporal.contracts import RecalledContext, RecallMemoriesInput, StoreEmbeddingInput
from workflows_temporal.story_memory import approx_tokens

__all__ = ["MemoryActivities", "MemoryPart", "cosine", "select_context"]


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity; 0.0 for empty, zero or mismatched vectors."""
    if not a or len(a) != len(b):
        return 0.0
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def select_context(
    path: list[Node], query: list[float], budget_tokens: int, max_memories: int
) -> RecalledContext:
    """Split the path (root first) into a rolling window and recalled memories.

    The newest summaries fill up to half the budget (always at least the parent's); the older
    scenes are ranked by cosine similarity of their summary embedding to ``query`` and the best
    ``max_memories`` that fit the rest of the budget are recalled (the best one always), in
    story order.
    """
    with_summary = [n for n in path if n.summary]
    total = sum(approx_tokens(n.summary) for n in with_summary)
    if total <= budget_tokens:
        return RecalledContext(recent=[n.summary for n in with_summary])
    recent: list[Node] = []
    used = 0
    for node in reversed(with_summary):
        cost = approx_tokens(node.summary)
        if recent and used + cost > budget_tokens // 2:
            break
        recent.insert(0, node)
        used += cost
    older = with_summary[: len(with_summary) - len(recent)]
    ranked = sorted(
        (n for n in older if n.summary_embedding),
        key=lambda n: cosine(query, n.summary_embedding or []),
        reverse=True,
    )
    chosen: list[Node] = []
    for node in ranked:
        cost = approx_tokens(node.summary)
        if len(chosen) >= max_memories or (chosen and used + cost > budget_tokens):
            continue  # the most relevant one is always recalled, even a little over budget
        chosen.append(node)
        used += cost
    chosen.sort(key=lambda n: n.depth)
    return RecalledContext(
        recent=[n.summary for n in recent],
        memories=[n.summary for n in chosen],
        memory_node_ids=[n.id for n in chosen],
    )


class MemoryPart(Transactions):
    """Embeddings of node summaries; both calls idempotent, StoreError on unknown ids."""

    async def store_embedding(self, inp: StoreEmbeddingInput) -> None:
        """Set the node's summary embedding (a retry writes the same vector again)."""
        if not inp.vector:
            raise StoreError("an embedding needs at least one number", service="store",
                             where=f"node {inp.node_id}", hint="Embed a non-empty summary")
        async with self.writing() as s:
            node = await require_node(s, inp.node_id)
            node.summary_embedding = list(inp.vector)

    async def recall_memories(self, inp: RecallMemoriesInput) -> RecalledContext:
        """The rolling window and the recalled scenes along root .. ``parent_node_id``."""
        async with self.reading() as s:
            await require_node_of_story(s, inp.parent_node_id, inp.story_id, role="parent node")
            path = await path_nodes(s, inp.parent_node_id)
            return select_context(path, inp.query, inp.budget_tokens, inp.max_memories)


class MemoryActivities:
    """``store_embedding`` and ``recall_memories`` on the db queue. Idempotent; a StoreError is
    a non-retryable ApplicationError "StoreError"; database failures stay retryable."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, where: str = "store"
    ) -> None:
        self._part = MemoryPart(sessions)
        self._where = where

    def _context(self) -> tuple[str, int, str]:
        info = activity.info()
        return info.workflow_id or "", info.attempt, info.activity_type

    @activity.defn(name="store_embedding")
    async def store_embedding(self, inp: StoreEmbeddingInput) -> None:
        """Record the embedding of a node's summary."""
        wid, attempt, name = self._context()
        with call_context(workflow_id=wid, attempt=attempt, activity=name):
            try:
                with CallTimer("store", "store_embedding", self._where):
                    await self._part.store_embedding(inp)
            except StoryloomError as exc:
                raise to_application_error(exc) from exc

    @activity.defn(name="recall_memories")
    async def recall_memories(self, inp: RecallMemoriesInput) -> RecalledContext:
        """Recent summaries plus the most relevant earlier scenes of the path."""
        wid, attempt, name = self._context()
        with call_context(workflow_id=wid, attempt=attempt, activity=name):
            try:
                with CallTimer("store", "recall_memories", self._where):
                    return await self._part.recall_memories(inp)
            except StoryloomError as exc:
                raise to_application_error(exc) from exc
