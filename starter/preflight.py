"""Checks against the services before a workflow starts: ids in the story store, the text model
in Ollama, the checkpoint in ComfyUI. Each failure is one sentence and exit 2, and nothing has been created yet.

Where a scene continues a story: ``--story S`` alone continues from the story's only branch tip
(its latest scene); with several tips the user must pick one with ``--parent``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from activities.errors import StoreError
from starter.outcome import EXIT_USAGE, CliFailure
from starter.settings import Settings
from starter.store_access import unknown_id

__all__ = ["Placement", "check_checkpoint", "check_model", "place_scene"]

logger = logging.getLogger(__name__)
_TIPS_SHOWN = 5
_MODEL_CHECK_TIMEOUT_S = 5.0  # a busy Ollama may be slow to list its models: then skip


@dataclass(frozen=True)
class Placement:
    """Where a new scene goes: its story, its parent node, and a line saying so (or None)."""

    story_id: str | None
    parent_node_id: str | None
    note: str | None = None


def _tips(nodes: list[Any]) -> list[Any]:
    """The branch tips (nodes without children), newest first."""
    parents = {n.parent_id for n in nodes}
    return sorted((n for n in nodes if n.id not in parents),
                  key=lambda n: (n.created_at, n.depth), reverse=True)


def _scene_label(node: Any) -> str:
    return f"scene {node.depth + 1} “{node.title or '(untitled)'}” (node {node.id})"


async def place_scene(settings: Settings, story_id: str | None, parent_id: str | None,
                      *, verb: str = "scene") -> Placement:
    """Check ``story_id``/``parent_id`` in the store and choose the parent for a continuation.

    No ids: a new story. ``parent_id``: it must exist (and belong to ``story_id`` if given).
    ``story_id`` alone: the story must exist; its only tip becomes the parent. Raises
    CliFailure (exit 2) for an unknown id or when several tips make the choice ambiguous.
    """
    if story_id is None and parent_id is None:
        return Placement(None, None)
    from starter.tree_command import open_store

    store = await open_store(settings)
    try:
        if parent_id is not None:
            try:
                node = await store.repo.get_node(parent_id)
            except StoreError as exc:
                raise unknown_id(settings, parent_id, "node") from exc
            if story_id is not None and node.story_id != story_id:
                raise CliFailure(f"Node {parent_id} belongs to story {node.story_id}, not "
                                 f"{story_id}: drop --story, or pick a node of {story_id}.",
                                 EXIT_USAGE)
            # The story stays as given: a branch named by its parent alone is that node's
            # story's (the workflow derives it, and its UI says "branch from node").
            return Placement(story_id, node.id)
        assert story_id is not None
        try:
            nodes = await store.repo.story_nodes(story_id)
        except StoreError as exc:
            raise unknown_id(settings, story_id) from exc
    finally:
        await store.close()
    tips = _tips(nodes)
    if not tips:
        return Placement(story_id, None, f"story {story_id} has no scene yet: this is its first")
    if len(tips) > 1:
        shown = "; ".join(_scene_label(n) for n in tips[:_TIPS_SHOWN])
        more = f" and {len(tips) - _TIPS_SHOWN} more" if len(tips) > _TIPS_SHOWN else ""
        raise CliFailure(f"Story {story_id} has {len(tips)} branch tips, so which scene to "
                         f"continue is ambiguous: pick one with --parent NODE ({shown}{more}; "
                         f"`storyloom tree {story_id}` draws them).", EXIT_USAGE)
    tip = tips[0]
    return Placement(story_id, tip.id, f"continuing story {story_id} after {_scene_label(tip)}")


def _installed(wanted: str, names: set[str]) -> bool:
    from activities.ollama.payloads import normalise_name

    return normalise_name(wanted) in names


async def check_model(settings: Settings, model: str) -> None:
    """Refuse (exit 2) a text model Ollama does not have, unless a configured fallback is there.

    Ollama not answering is not refused: the scene waits for it, durably (the engine retries).
    """
    from activities.ollama.payloads import normalise_name
    from starter.clients import ollama_client

    client = ollama_client(settings)
    try:
        listed = await asyncio.wait_for(client.list_models(), _MODEL_CHECK_TIMEOUT_S)
        names = {normalise_name(m.full_name) for m in listed}
    except Exception as exc:  # noqa: BLE001 - unreachable: the workflow will wait and retry
        logger.info("model check skipped: Ollama at %s: %s", settings.ollama_url, exc)
        return
    finally:
        await client.aclose()
    if any(_installed(m, names) for m in [model, *settings.fallback_models]):
        return
    shown = ", ".join(sorted(names)) or "none"
    raise CliFailure(f"Ollama at {settings.ollama_url} has no model {model!r} (installed: "
                     f"{shown}): `ollama pull {model}` there, or pick one with --model.",
                     EXIT_USAGE)


async def check_checkpoint(settings: Settings, template: str, checkpoint: str | None, *,
                           source: str = "STORYLOOM_CHECKPOINT") -> None:
    """Refuse (exit 2) a checkpoint ComfyUI does not have: ``checkpoint``, or when None the
    ``template``'s default (a template without a checkpoint parameter is not checked).

    ComfyUI not answering is not refused: the render waits for it, durably. ``source`` names
    the setting or flag in the message.
    """
    from activities.templates import WorkflowManager
    from starter.clients import comfy_client
    from starter.doctor_comfyui import checkpoint_names, missing_checkpoint

    parameter = WorkflowManager().manifest(template).parameters.get("checkpoint")
    wanted = checkpoint or (parameter.default if parameter is not None else None)
    if not wanted:
        return
    client = comfy_client(settings)
    try:
        names = checkpoint_names(await asyncio.wait_for(
            client.object_info("CheckpointLoaderSimple"), _MODEL_CHECK_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - unreachable: the render will wait and retry
        logger.info("checkpoint check skipped: ComfyUI at %s: %s", settings.comfyui_url, exc)
        return
    finally:
        await client.aclose()
    if wanted in names:
        return
    given = f"{source}={wanted}" if checkpoint else f"the {template!r} template's default " \
        f"checkpoint {wanted} ({source} is not set)"
    raise CliFailure(f"ComfyUI at {settings.comfyui_url} has no checkpoint {wanted!r} "
                     f"({given}): {missing_checkpoint(wanted, names, setting=source)}.",
                     EXIT_USAGE)
