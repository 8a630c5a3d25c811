"""Row look-ups shared by the repository's parts; a missing or foreign row is a StoreError.

Every message names the id that was wrong and what to do, so a typo on the command line or a
stale id in a workflow reads as what it is (ARCHITECTURE rule 9).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from activities.errors import StoreError
from activities.store.models import Node, Story

__all__ = ["path_nodes", "require_node", "require_node_of_story", "require_story"]


async def require_story(session: AsyncSession, story_id: str) -> Story:
    story = await session.get(Story, story_id)
    if story is None:
        raise StoreError(
            f"story '{story_id}' does not exist",
            service="store",
            where=f"story {story_id}",
            hint="`storyloom list` shows the stories; leave the story id out to start a new one",
            details={"story_id": story_id},
        )
    return story


async def require_node(session: AsyncSession, node_id: str) -> Node:
    node = await session.get(Node, node_id)
    if node is None:
        raise StoreError(
            f"node '{node_id}' does not exist",
            service="store",
            where=f"node {node_id}",
            hint="Check the id: `storyloom show STORY_ID` shows a story's nodes "
            "(node ids look like n_0123456789ab)",
            details={"node_id": node_id},
        )
    return node


async def require_node_of_story(
    session: AsyncSession, node_id: str, story_id: str, *, role: str = "node"
) -> Node:
    """The node, which must belong to ``story_id`` (``role`` names it in the message)."""
    node = await require_node(session, node_id)
    if node.story_id != story_id:
        raise StoreError(
            f"{role} '{node_id}' belongs to story '{node.story_id}', not to story '{story_id}'",
            service="store",
            where=f"node {node_id}",
            hint=f"Use a node of story '{story_id}', or pass story id '{node.story_id}'",
            details={"node_id": node_id, "story_id": story_id, "node_story_id": node.story_id},
        )
    return node


async def path_nodes(session: AsyncSession, node_id: str) -> list[Node]:
    """The nodes from the root down to ``node_id`` (inclusive), root first; one query."""
    start = select(Node.id, Node.parent_id).where(Node.id == node_id)
    path = start.cte("path", recursive=True)
    path = path.union_all(
        select(Node.id, Node.parent_id).join(path, Node.id == path.c.parent_id)
    )
    rows = await session.execute(select(Node).join(path, Node.id == path.c.id))
    return sorted(rows.scalars().all(), key=lambda n: n.depth)
