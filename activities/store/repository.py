"""The story store's repository: every read and write of stories, nodes, characters and images.

The methods live in three parts (stories.py, cast.py, images.py); this module joins them and
adds the render-lease adapter the ComfyUI render activity takes.
"""

from __future__ import annotations

import os
import socket

from activities.store.cast import CastPart
from activities.store.images import ImagesPart
from activities.store.stories import StoriesPart

__all__ = ["RenderLease", "StoryRepository"]


class StoryRepository(StoriesPart, CastPart, ImagesPart):
    """Async access to the story store, built on an ``async_sessionmaker``.

    Contract: each method is one transaction; every write is idempotent (keyed by workflow id,
    story + name, sha256 or prompt id), so an activity retried after a crash changes nothing
    twice. Bad input raises ``StoreError`` (final, names the problem and the fix) and writes
    nothing. Database failures (connection lost, deadlock, lock timeout) propagate unchanged
    as SQLAlchemy errors, which the activity layer leaves retryable.
    """


class RenderLease:
    """Fencing for renders: ``await lease.take(prompt_id, attempt)`` is True while this attempt
    is the newest one seen for the prompt, False once a later attempt has taken over.

    It is also the render's durable memory of its submits (heartbeats are throttled and die with
    their worker): ``submitted_before`` says whether an attempt ever got as far as posting the
    prompt, and ``note_resubmitted`` records on the node, before the post, that ComfyUI lost the
    job and it is being submitted again, so a later attempt that only re-attaches keeps the note.
    """

    def __init__(self, repo: StoryRepository, holder: str | None = None) -> None:
        self._repo = repo
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"

    async def take(self, prompt_id: str, attempt: int) -> bool:
        return await self._repo.take_render_lease(prompt_id, attempt, self.holder)

    async def submitted_before(self, prompt_id: str) -> bool:
        return await self._repo.render_lease_taken(prompt_id)

    async def note_resubmitted(self, node_id: str, note: str) -> None:
        await self._repo.add_note(node_id, note)
