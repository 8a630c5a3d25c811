"""`storyloom show` and `storyloom list`: read stories and nodes from the database and print them."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from activities.errors import StoreError
from starter.console import count, screen
from starter.outcome import EXIT_OK
from starter.settings import Settings
from starter.store_access import no_store_note, open_reading, store_missing, unknown_id

__all__ = ["list_stories", "show"]


async def _open(settings: Settings, ident: str | None = None) -> Any:
    return await open_reading(settings, ident, "node or story")


def _image_label(node: Any) -> str:
    status = node.image_status
    if status == "done":
        return f"image done: {node.image_path}"
    if status == "failed":
        return f"image FAILED: {node.image_error or 'no reason recorded'}"
    return f"image {status}"


def _print_node(console: Console, node: Any) -> None:
    console.print(f"[bold]{escape(node.title)}[/bold]  (node {node.id}, story {node.story_id}, "
                  f"depth {node.depth})", highlight=False)
    console.print(f"direction: {node.direction}", highlight=False, markup=False)
    console.print(_image_label(node), highlight=False, markup=False)
    if node.image_sha256:
        console.print(f"sha256: {node.image_sha256}", highlight=False)
    for note in node.notes or []:
        console.print(f"note: {note.get('text', note) if isinstance(note, dict) else note}",
                      highlight=False, markup=False)
    console.print()
    console.print(node.text, markup=False, highlight=False)


def _print_story(console: Console, story: Any, nodes: list[Any]) -> None:
    tree = Tree(f"[bold]{escape(story.title or story.premise[:60])}[/bold] (story {story.id})")
    from starter.tree_command import add_chains

    add_chains(tree, nodes, {  # tree order: parents come before their children
        n.id: f"{escape(n.title)} [dim]({n.id}; {escape(_image_label(n))})[/dim]" for n in nodes})
    console.print(tree)


async def show(settings: Settings, ident: str) -> int:
    """Print a node (title, text, image status, notes) or a story (its tree of titles)."""
    store = await _open(settings, ident)
    console = screen()
    try:
        try:
            _print_node(console, await store.repo.get_node(ident))
            return EXIT_OK
        except StoreError:
            pass
        try:
            story = await store.repo.get_story(ident)
        except StoreError as exc:
            raise unknown_id(settings, ident, "node or story") from exc
        _print_story(console, story, await store.repo.story_nodes(story.id))
        return EXIT_OK
    finally:
        await store.close()


async def list_stories(settings: Settings) -> int:
    """One line per story, newest first; where there is no store yet, says so (exit 0)."""
    if store_missing(settings):
        print(no_store_note(settings))
        return EXIT_OK
    store = await _open(settings)
    try:
        stories = await store.repo.list_stories()
        if not stories:
            print("no stories yet: storyloom scene \"your premise\"")
        for story in stories:
            nodes = await store.repo.story_nodes(story.id)
            title = story.title or story.premise[:60]
            print(f"{story.id}  {count(len(nodes), 'scene'):>10}  {title}")
        return EXIT_OK
    finally:
        await store.close()
