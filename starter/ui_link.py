"""Links into the Temporal web UI: one story's workflows (a list filtered by ``StoryId``), and
whether the UI is there to open them (a link is printed only when it leads somewhere)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.store_access import require_story

__all__ = ["show_story_link", "story_list_url", "story_query", "ui_answers", "ui_base"]


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


async def ui_answers(settings: Settings, timeout: float = 1.5) -> bool:
    """True when the Temporal web UI answers at ``ui_base`` (its ``/api/v1/settings``)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            reply = await http.get(ui_base(settings) + "/api/v1/settings")
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


async def show_story_link(settings: Settings, story_id: str) -> int:
    """`storyloom ui STORY`: print the link when the story exists and the UI answers.

    CliFailure exit 2 for an unknown story; exit 1 when the UI does not answer (the message
    still carries the link, for when it is up)."""
    url = story_list_url(settings, story_id)
    await require_story(settings, story_id)
    if not await ui_answers(settings):
        raise CliFailure(f"The Temporal UI does not answer at {ui_base(settings)}: it runs "
                         "while `storyloom up` (without --headless) does. Then open " + url,
                         EXIT_FAILED)
    print(url)
    return EXIT_OK
