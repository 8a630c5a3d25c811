"""`storyloom tree STORY`: draw a story's tree of scenes (titles, image status, node ids)."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.tree import Tree

from activities.errors import StoreError
from starter.console import count, screen
from starter.outcome import EXIT_OK
from starter.settings import Settings
from starter.store_access import explain_store_error, open_reading

__all__ = ["add_chains", "build_tree", "open_store", "show_tree"]

_IMAGE_MARK = {"done": "[green]image ✓[/green]", "failed": "[red]image ✗[/red]",
               "skipped": "[dim]no image[/dim]", "pending": "[yellow]image pending[/yellow]",
               "rendering": "[yellow]rendering[/yellow]"}


async def open_store(settings: Settings) -> Any:
    """The story store at the configured URL, schema brought up to date. Close it when done."""
    from activities.store.db import open_store as open_db
    from activities.store.db import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(settings.effective_database_url)
    return await open_db(settings.effective_database_url)


def build_tree(story: Any, nodes: list[Any]) -> Tree:
    """The rich Tree of a story; ``nodes`` in tree order (parents before children)."""
    root = Tree(f"[bold]{escape(story.title or story.premise[:60])}[/bold] "
                f"[dim](story {story.id}, {count(len(nodes), 'scene')})[/dim]")
    labels = {}
    for node in nodes:
        mark = _IMAGE_MARK.get(node.image_status, escape(node.image_status))
        label = f"{escape(node.title or '(untitled)')}  {mark}  [dim]{node.id}[/dim]"
        if node.image_status == "failed" and node.image_error:
            label += f" [red dim]{escape(node.image_error[:80])}[/red dim]"
        labels[node.id] = label
    add_chains(root, nodes, labels)
    return root


def add_chains(root: Tree, nodes: list[Any], labels: dict[str, str]) -> None:
    """Add ``nodes`` (tree order) under ``root``: a scene that is its parent's only child is
    drawn below it at the same depth, so a straight story never indents; only the scenes
    after a branch point are nested, one level per branch."""
    kids: dict[str | None, int] = {}
    for node in nodes:
        kids[node.parent_id] = kids.get(node.parent_id, 0) + 1
    container: dict[str, Tree] = {}  # where a node's line went
    drawn: dict[str, Tree] = {}  # the node's own line
    for node in nodes:
        parent = node.parent_id if node.parent_id in drawn else None
        if parent is None:
            where = root
        elif kids[parent] == 1:
            where = container[parent]
        else:
            where = drawn[parent]
        container[node.id] = where
        drawn[node.id] = where.add(labels[node.id])


async def show_tree(settings: Settings, story_id: str) -> int:
    store = await open_reading(settings, story_id)
    try:
        try:
            story = await store.repo.get_story(story_id)
            nodes = await store.repo.story_nodes(story_id)
        except StoreError as exc:
            raise explain_store_error(settings, exc) from exc
        screen().print(build_tree(story, nodes))
        return EXIT_OK
    finally:
        await store.close()
