"""The story tree part of the repository: stories, nodes, paths, and the scene's context."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activities.errors import StoreError
from activities.store.cast import characters_of
from activities.store.dialects import insert_or_ignore
from activities.store.ids import new_story_id, node_id, story_id_for
from activities.store.images import append_note
from activities.store.lookups import (
    path_nodes,
    require_node,
    require_node_of_story,
    require_story,
)
from activities.store.models import Node, Story, utcnow
from activities.store.transactions import Transactions
from workflows_temporal.contracts import (
    ImageStatus,
    LoadContextInput,
    SavedNode,
    SaveNodeInput,
    SceneContext,
)

__all__ = ["StoriesPart"]


class StoriesPart(Transactions):
    """Stories and nodes. Creating writes are keyed (story id / workflow id) and idempotent."""

    async def create_story(
        self, premise: str, *, story_id: str | None = None, settings: dict[str, Any] | None = None
    ) -> Story:
        """Create a story, or return the existing one with that id (its premise is kept)."""
        if not premise.strip():
            raise StoreError(
                "a story needs a premise", service="store", hint="Give a non-empty premise"
            )
        sid = story_id or new_story_id()
        async with self.writing() as s:
            await self._insert_story(s, sid, premise, settings or {})
            return await require_story(s, sid)

    async def _insert_story(
        self, s: AsyncSession, sid: str, premise: str, settings: dict[str, Any]
    ) -> None:
        now = utcnow()
        values = {
            "id": sid, "title": "", "premise": premise, "settings": settings,
            "created_at": now, "updated_at": now,
        }
        conn = await s.connection()
        await conn.execute(insert_or_ignore(self.dialect(s), Story, values, ["id"]))

    async def get_story(self, story_id: str) -> Story:
        """The story; StoreError if there is none with that id."""
        async with self.reading() as s:
            return await require_story(s, story_id)

    async def list_stories(self) -> list[Story]:
        """All stories, newest first."""
        async with self.reading() as s:
            rows = await s.execute(select(Story).order_by(Story.created_at.desc(), Story.id))
            return list(rows.scalars().all())

    async def get_node(self, node_id: str) -> Node:
        """The node; StoreError if there is none with that id."""
        async with self.reading() as s:
            return await require_node(s, node_id)

    async def story_nodes(self, story_id: str) -> list[Node]:
        """The story's nodes in tree order: depth first, siblings oldest first."""
        async with self.reading() as s:
            await require_story(s, story_id)
            rows = await s.execute(
                select(Node).where(Node.story_id == story_id).order_by(Node.created_at, Node.id)
            )
            nodes = list(rows.scalars().all())
        children: dict[str | None, list[Node]] = defaultdict(list)
        for node in nodes:
            children[node.parent_id].append(node)
        ordered: list[Node] = []
        stack = list(reversed(children[None]))
        while stack:
            node = stack.pop()
            ordered.append(node)
            stack.extend(reversed(children[node.id]))
        return ordered

    async def path_to_root(self, node_id: str) -> list[Node]:
        """The nodes from the story's root down to ``node_id`` (inclusive), root first."""
        async with self.reading() as s:
            await require_node(s, node_id)
            return await path_nodes(s, node_id)

    async def save_node(self, inp: SaveNodeInput) -> SavedNode:
        """Save a written scene; one node per workflow id (a retry returns it, created=False).

        Raises StoreError (final) when the story or parent is unknown, the parent belongs to
        another story, or the workflow id already saved a node elsewhere in the tree.
        """
        async with self.writing() as s:
            story = await require_story(s, inp.story_id)
            depth = 0
            if inp.parent_node_id is not None:
                parent = await require_node_of_story(
                    s, inp.parent_node_id, story.id, role="parent node"
                )
                depth = parent.depth + 1
            now = utcnow()
            status = ImageStatus.PENDING if inp.illustrate else ImageStatus.SKIPPED
            values: dict[str, Any] = {
                "id": node_id(inp.workflow_id), "story_id": story.id,
                "parent_id": inp.parent_node_id, "depth": depth,
                "workflow_id": inp.workflow_id, "direction": inp.direction, "title": inp.title,
                "text": inp.text, "summary": inp.summary, "model": inp.model,
                "image_status": status.value, "notes": [], "created_at": now, "updated_at": now,
            }
            conn = await s.connection()
            result = await conn.execute(
                insert_or_ignore(self.dialect(s), Node, values, ["workflow_id"])
            )
            created = result.rowcount == 1
            node = (
                await s.execute(select(Node).where(Node.workflow_id == inp.workflow_id))
            ).scalar_one()
            if node.story_id != story.id or node.parent_id != inp.parent_node_id:
                raise StoreError(
                    f"workflow '{inp.workflow_id}' already saved node '{node.id}' under story "
                    f"'{node.story_id}' parent '{node.parent_id}'",
                    service="store",
                    where=f"node {node.id}",
                    hint="Start the new scene with a new workflow id",
                )
            if inp.note:  # a fallback taken while writing (a retry adds no second copy)
                append_note(node, inp.note)
            if created and depth == 0 and not story.title:
                story.title = inp.title
            return SavedNode(node_id=node.id, story_id=story.id, depth=node.depth, created=created)

    async def load_context(self, inp: LoadContextInput) -> SceneContext:
        """Everything the writer needs; creates the story when ``story_id`` is None.

        The new story's id derives from the workflow id, so a retried activity finds the story
        its first attempt created. With only ``parent_node_id``, the parent's story is used.
        """
        creating = inp.story_id is None and inp.parent_node_id is None
        async with (self.writing() if creating else self.reading()) as s:
            if creating:
                sid = story_id_for(inp.workflow_id)
                await self._insert_story(s, sid, inp.direction, {})
                story = await require_story(s, sid)
            elif inp.story_id is None:
                assert inp.parent_node_id is not None
                story = await require_story(s, (await require_node(s, inp.parent_node_id)).story_id)
            else:
                story = await require_story(s, inp.story_id)
            path: list[Node] = []
            if inp.parent_node_id is not None:
                await require_node_of_story(s, inp.parent_node_id, story.id, role="parent node")
                path = await path_nodes(s, inp.parent_node_id)
            return SceneContext(
                story_id=story.id,
                premise=story.premise,
                parent_node_id=inp.parent_node_id,
                depth=len(path),
                summaries=[n.summary for n in path if n.summary],
                characters=await characters_of(s, story.id),
            )
