"""Read one story from the store into a ``Book``: the scenes to print, in order, and its cast.

Pure reading: nothing is written. The book is either the whole tree (depth first, siblings
oldest first, each scene knowing its children for branch navigation) or one path from the root
down to a chosen node. Every text field is the LLM's raw output: renderers must escape it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select

from activities.errors import StoreError
from activities.store.db import Store
from activities.store.models import Character, Node, NodeCharacter

__all__ = ["Book", "BookCharacter", "BookScene", "load_book"]


@dataclass(frozen=True)
class BookCharacter:
    """A character of the story: canonical look and (maybe) a reference picture path."""

    name: str
    look: str
    reference_image: str | None = None


@dataclass(frozen=True)
class BookScene:
    """One scene as the reader sees it; ``children`` are the branches that follow it."""

    id: str
    parent_id: str | None
    depth: int
    title: str
    direction: str
    text: str
    image_status: str
    image_path: str | None = None
    image_error: str | None = None
    characters: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Book:
    """A story ready to print: ``scenes`` in reading order, ``path_to`` set for a single path."""

    story_id: str
    title: str
    premise: str
    scenes: list[BookScene]
    characters: list[BookCharacter]
    path_to: str | None = None

    def scene(self, scene_id: str) -> BookScene | None:
        return next((s for s in self.scenes if s.id == scene_id), None)


async def _cast_by_node(store: Store, story_id: str) -> dict[str, list[str]]:
    async with store.sessions() as session:
        rows = await session.execute(
            select(NodeCharacter.node_id, Character.name)
            .join(Character, Character.id == NodeCharacter.character_id)
            .where(Character.story_id == story_id)
            .order_by(Character.created_at, Character.name_key)
        )
        cast: dict[str, list[str]] = defaultdict(list)
        for node_id, name in rows.all():
            cast[node_id].append(name)
        return cast


def _scene(node: Node, cast: list[str], children: list[str]) -> BookScene:
    return BookScene(
        id=node.id, parent_id=node.parent_id, depth=node.depth, title=node.title or "(untitled)",
        direction=node.direction, text=node.text, image_status=node.image_status,
        image_path=node.image_path, image_error=node.image_error, characters=cast,
        children=children,
    )


async def load_book(store: Store, story_id: str, path_to: str | None = None) -> Book:
    """The story (or its path to node ``path_to``) as a Book.

    Raises StoreError when the story is unknown or ``path_to`` is not one of its nodes.
    """
    story = await store.repo.get_story(story_id)
    nodes: list[Node] = await store.repo.story_nodes(story_id)
    if path_to is not None:
        if not any(n.id == path_to for n in nodes):
            raise StoreError(
                f"node {path_to!r} is not part of story {story_id!r}", service="store",
                where=f"story {story_id}", hint=f"`storyloom show {story_id}` lists its nodes",
            )
        nodes = await store.repo.path_to_root(path_to)
    kept = {n.id for n in nodes}
    children: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        if node.parent_id is not None and node.parent_id in kept:
            children[node.parent_id].append(node.id)
    cast = await _cast_by_node(store, story_id)
    looks = await store.repo.list_characters(story_id)
    if path_to is not None:  # a single path shows only the characters who appear on it
        present = {name for n in nodes for name in cast.get(n.id, [])}
        looks = [c for c in looks if c.name in present]
    return Book(
        story_id=story.id,
        title=story.title or (nodes[0].title if nodes else "") or story.premise[:80],
        premise=story.premise,
        scenes=[_scene(n, cast.get(n.id, []), children.get(n.id, [])) for n in nodes],
        characters=[BookCharacter(c.name, c.look, c.reference_image) for c in looks],
        path_to=path_to,
    )
