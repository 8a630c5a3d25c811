"""`storyloom export STORY`: write a story as an HTML storybook and/or Markdown notes."""

from __future__ import annotations

import sys
from pathlib import Path

from activities.errors import StoreError
from starter.book import load_book
from starter.console import count
from starter.export_html import NotABookFolder, write_html
from starter.export_markdown import check_markdown_folder, render_markdown, write_markdown
from starter.outcome import EXIT_OK, EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.store_access import explain_store_error, open_reading

__all__ = ["STDOUT", "run_export"]

STDOUT = "-"  # --markdown without a file: print it


async def run_export(
    settings: Settings,
    story_id: str,
    *,
    html_dir: Path | None = None,
    markdown: str | None = None,
    path_to: str | None = None,
    force: bool = False,
) -> int:
    """Export the story (or its path to ``path_to``); exit 2 when the story/node is unknown."""
    if html_dir is None and markdown is None:
        raise CliFailure("Say what to write: --html DIR and/or --markdown [FILE].", EXIT_USAGE)
    store = await open_reading(settings, story_id)
    try:
        try:
            book = await load_book(store, story_id, path_to)
        except StoreError as exc:
            raise explain_store_error(settings, exc) from exc
    finally:
        await store.close()
    if markdown not in (None, STDOUT):  # both folders checked before anything is written
        try:
            check_markdown_folder(Path(markdown), force=force)
        except NotABookFolder as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
    if html_dir is not None:
        try:
            page = write_html(book, html_dir, home=settings.data_dir, force=force)
        except NotABookFolder as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        print(f"storybook: {page} ({count(len(book.scenes), 'scene')})", file=sys.stderr)
    if markdown == STDOUT:
        sys.stdout.write(render_markdown(book))
    elif markdown is not None:
        try:
            notes = write_markdown(book, Path(markdown), home=settings.data_dir, force=force)
        except NotABookFolder as exc:
            raise CliFailure(str(exc), EXIT_USAGE) from exc
        print(f"markdown: {notes}", file=sys.stderr)
    return EXIT_OK
