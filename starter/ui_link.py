"""Links into the Temporal web UI: one story's workflows (a list filtered by ``StoryId``)."""

from __future__ import annotations

from urllib.parse import quote

from starter.outcome import EXIT_USAGE, CliFailure
from starter.settings import Settings

__all__ = ["story_list_url", "story_query", "ui_base"]


def ui_base(settings: Settings) -> str:
    """``http://<temporal host>:<temporal_ui_port>`` (the dev server's UI sits beside it)."""
    host = settings.temporal_address.rpartition(":")[0] or "127.0.0.1"
    return f"http://{host}:{settings.temporal_ui_port}"


def story_query(story_id: str) -> str:
    """The visibility query that finds every workflow of the story; CliFailure on a bad id."""
    if not story_id or any(c in story_id for c in '"\\\n'):
        raise CliFailure(f"{story_id!r} is not a story id (`storyloom list` shows them)",
                         EXIT_USAGE)
    return f'StoryId="{story_id}"'


def story_list_url(settings: Settings, story_id: str) -> str:
    """The UI's workflow list filtered to the story, the query URL-encoded."""
    namespace = quote(settings.temporal_namespace, safe="")
    return (f"{ui_base(settings)}/namespaces/{namespace}/workflows"
            f"?query={quote(story_query(story_id), safe='')}")
