"""Opening the story store from the CLI, and the sentences for what is not in it.

Commands that only read (``list``, ``show``, ``tree``, ``export``, ``character list``, ``ui``)
never create a store: where the SQLite file does not exist they say so and write nothing
(no database, no folder). Commands that write create it (``open_store`` in tree_command).
An unknown story or node id gets one sentence with one hint, the same in every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starter.outcome import EXIT_USAGE, CliFailure
from starter.settings import Settings

__all__ = [
    "explain_store_error", "no_store_note", "open_reading", "require_story", "store_missing",
    "unknown_id",
]

_LIST_HINT = "`storyloom list` shows the stories."
_NODE_HINT = "`storyloom tree STORY` lists a story's node ids."


def _sqlite_file(settings: Settings) -> Path | None:
    """The SQLite file of the store, or None for another database (a server: it exists)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(settings.effective_database_url)
    except Exception:  # noqa: BLE001 - the open itself reports a malformed URL
        return None
    if not url.drivername.startswith("sqlite") or not url.database or \
            url.database == ":memory:":
        return None
    return Path(url.database)


def store_missing(settings: Settings) -> bool:
    """True when the store is a SQLite file that does not exist yet (no story was written)."""
    path = _sqlite_file(settings)
    return path is not None and not path.exists()


def no_store_note(settings: Settings) -> str:
    """``no stories yet: no store at PATH`` and how to make the first one."""
    return (f"no stories yet: no store at {_sqlite_file(settings)} (STORYLOOM_DATA_DIR is "
            f"{settings.data_dir}); `storyloom scene \"your premise\"` writes the first.")


def unknown_id(settings: Settings, ident: str, what: str = "story") -> CliFailure:
    """Exit 2: there is no ``what`` (story, node, "node or story") ``ident`` in the store."""
    hint = _NODE_HINT if what == "node" else _LIST_HINT
    return CliFailure(f"There is no {what} {ident!r} in {settings.store_label}: {hint}",
                      EXIT_USAGE)


async def open_reading(settings: Settings, ident: str | None = None,
                       what: str = "story") -> Any:
    """The existing store for a command that only reads (close it when done). Where there is
    no store, CliFailure exit 2 naming ``ident`` and the missing file; nothing is created."""
    from activities.store.db import open_store, upgrade

    if store_missing(settings):
        head = f"There is no {what} {ident!r}: " if ident else ""
        raise CliFailure(head + no_store_note(settings), EXIT_USAGE)
    await upgrade(settings.effective_database_url)
    return await open_store(settings.effective_database_url)


async def require_story(settings: Settings, story_id: str) -> None:
    """CliFailure (exit 2) when the store has no story ``story_id``; creates nothing."""
    from activities.errors import StoreError

    store = await open_reading(settings, story_id)
    try:
        await store.repo.get_story(story_id)
    except StoreError as exc:
        raise unknown_id(settings, story_id) from exc
    finally:
        await store.close()


def explain_store_error(settings: Settings, exc: Any) -> CliFailure:
    """A StoreError from a look-up as the CLI says it: a missing story or node reads like
    :func:`unknown_id`; any other (a node of another story) keeps its own sentence."""
    details = getattr(exc, "details", None) or {}
    if set(details) == {"story_id"}:
        return unknown_id(settings, str(details["story_id"]))
    if set(details) == {"node_id"}:
        return unknown_id(settings, str(details["node_id"]), "node")
    return CliFailure(exc.describe(), EXIT_USAGE)
