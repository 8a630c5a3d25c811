"""Readable row ids (``s_``/``n_``/``c_``/``a_`` + 12 hex) and the normalised character name key.

Ids of rows an activity creates are derived from its idempotency key (workflow id, story and
name, sha256), so a retried activity computes the same id and cannot create a second row.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["asset_id", "character_id", "name_key", "new_story_id", "node_id", "story_id_for"]


def _derived(prefix: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}_{digest[:12]}"


def new_story_id() -> str:
    """A fresh story id, for stories created by hand (not by a workflow)."""
    return f"s_{secrets.token_hex(6)}"


def story_id_for(workflow_id: str) -> str:
    """The id of the story a workflow creates; the same on every retry."""
    return _derived("s", "story", workflow_id)


def node_id(workflow_id: str) -> str:
    """The id of the node a scene workflow saves; the same on every retry."""
    return _derived("n", "node", workflow_id)


def name_key(name: str) -> str:
    """How names are compared: whitespace collapsed, case folded ("Mira  Vale" == "mira vale")."""
    return " ".join(name.split()).casefold()


def character_id(story_id: str, key: str) -> str:
    return _derived("c", story_id, key)


def asset_id(kind: str, sha256: str) -> str:
    return _derived("a", kind, sha256)
