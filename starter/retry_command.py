"""`storyloom retry-image NODE`: start a RetryImageWorkflow for one node and report its result.

Exit codes: 0 the picture is now done, 1 it failed again (the reason is printed) or the retry
workflow failed, 2 bad usage (unknown node, a done image without --force, a size or checkpoint
the template/server cannot take, Temporal unreachable). ``--json`` prints exactly the SceneResult JSON on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities.errors import StoreError
from starter.input_checks import check_image_size
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure
from starter.pollers import queues_needed, unserved_watch
from starter.preflight import check_checkpoint
from starter.scene_command import result_line, still_running_note, ui_suffix
from starter.settings import Settings, image_settings
from starter.temporal_client import TemporalUnreachable, connect
from starter.ui_link import ui_answers
from workflows_temporal.contracts import ImageStatus, RetryImageRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE
from workflows_temporal.scene import NODE_ID, STORY_ID
from workflows_temporal.scene_prompts import base_template

__all__ = ["RETRY_NOTE_PREFIX", "choose_settings", "run_retry_image"]

logger = logging.getLogger(__name__)

RETRY_NOTE_PREFIX = "retry-image "  # every retry leaves one such note on the node


@dataclass(frozen=True)
class _Node:
    """What the retry needs of the node: its state and the settings it was made with."""

    status: ImageStatus
    retries: int
    story_id: str
    recorded: dict[str, Any]  # the template, model, checkpoint, image_width... it recorded


async def _node_state(settings: Settings, node_id: str) -> _Node:
    """The node's image state and recorded settings; CliFailure (exit 2) if unknown."""
    from starter.store_access import open_reading, unknown_id

    store = await open_reading(settings, node_id, "node")
    try:
        node = await store.repo.get_node(node_id)
    except StoreError as exc:
        raise unknown_id(settings, node_id, "node") from exc
    finally:
        await store.close()
    notes = [n.get("text", "") for n in node.notes or [] if isinstance(n, dict)]
    retries = sum(1 for text in notes if str(text).startswith(RETRY_NOTE_PREFIX))
    made = node.image_settings or {}
    template = node.image_template and base_template(node.image_template)
    # Only what the node recorded (a None checkpoint recorded means the template's default).
    recorded = {key: value for key, value in (
        ("template", template), ("model", node.model or None),
        ("image_width", made.get("width")), ("image_height", made.get("height")),
    ) if value is not None}
    if "checkpoint" in made:
        recorded["checkpoint"] = made["checkpoint"]
    return _Node(ImageStatus(node.image_status), retries, str(node.story_id), recorded)


# setting -> (the flag that picks it, the variable a terminal sets it with)
_CHOICES = {
    "template": ("--template", "STORYLOOM_TEMPLATE"),
    "model": ("--model", "STORYLOOM_TEXT_MODEL"),
    "checkpoint": ("--checkpoint", "STORYLOOM_CHECKPOINT"),
    "image_width": ("--width", "STORYLOOM_IMAGE_WIDTH"),
    "image_height": ("--height", "STORYLOOM_IMAGE_HEIGHT"),
}
_SETTING_FIELDS = {"template": "template", "model": "text_model", "checkpoint": "checkpoint",
                   "image_width": "image_width", "image_height": "image_height"}


def choose_settings(settings: Settings, recorded: dict[str, Any],
                    flags: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings a retry renders with, and one line per terminal setting left unused.

    A flag always wins; without one the node's recorded value is used (a ``--force``
    re-render repeats its picture), and the terminal's value only where the node recorded
    none. A terminal variable that is set and differs from the record is named with the flag
    that would use it.
    """
    terminal = {"template": settings.template, "model": settings.text_model,
                **image_settings(settings)}
    chosen: dict[str, Any] = {}
    notes: list[str] = []
    for key, (flag, variable) in _CHOICES.items():
        if flags.get(key) is not None:
            chosen[key] = flags[key]
        elif key in recorded:
            chosen[key] = recorded[key]
            explicit = _SETTING_FIELDS[key] in settings.model_fields_set
            if explicit and terminal[key] is not None and terminal[key] != chosen[key]:
                was = chosen[key] if chosen[key] is not None else "the template's default"
                notes.append(f"{variable}={terminal[key]} is not used: node made with {was}; "
                             f"add {flag} {terminal[key]} to render with it")
        else:
            chosen[key] = terminal[key]
    return chosen, notes


async def run_retry_image(
    settings: Settings, node_id: str, *, force: bool = False, as_json: bool = False,
    **flags: Any,
) -> int:
    """Render ``node_id``'s image again as its own workflow and wait for it.

    ``flags``: template, model, checkpoint, image_width, image_height given on the command
    line (None: the node's recorded value). Exit 0 the picture is done, 1 it failed again (the
    reason is printed) or the retry failed, 2 bad usage (checked before anything starts).
    """
    from workflows_temporal.retry_image import retry_workflow_id

    node = await _node_state(settings, node_id)
    status = node.status
    if status in (ImageStatus.PENDING, ImageStatus.RENDERING):
        raise CliFailure(f"Node {node_id}'s image is still {status.value}: its scene is "
                         "rendering it. Wait for it (storyloom watch), then retry if it fails.",
                         EXIT_USAGE)
    if status is ImageStatus.DONE and not force:
        raise CliFailure(f"Node {node_id} already has its image (done). Add --force to render "
                         "it again.", EXIT_USAGE)
    chosen, notes = choose_settings(settings, node.recorded, flags)
    width_from = "--width" if flags.get("image_width") is not None else (
        "the node's width" if "image_width" in node.recorded
        else "STORYLOOM_IMAGE_WIDTH")
    height_from = "--height" if flags.get("image_height") is not None else (
        "the node's height" if "image_height" in node.recorded
        else "STORYLOOM_IMAGE_HEIGHT")
    check_image_size(chosen["template"], chosen["image_width"], chosen["image_height"],
                     sources=(width_from, height_from))
    for line in notes:
        print(line, file=sys.stderr)
    await check_checkpoint(settings, chosen["template"], chosen["checkpoint"],
                           source="--checkpoint")
    request = RetryImageRequest(
        node_id=node_id, gpu_sharing=settings.gpu_sharing, gpu=settings.gpu,
        attempt=node.retries + 1, settings_chosen=True, **chosen,
    )
    workflow_id = retry_workflow_id(node_id, request.attempt)
    try:
        client: Client = await connect(settings)
    except TemporalUnreachable as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc
    try:
        handle = await client.start_workflow(
            "RetryImageWorkflow", request, id=workflow_id, task_queue=SCENE_WORKFLOW_QUEUE,
            result_type=SceneResult, static_summary=f"Retry image of node {node_id}",
            static_details=f"**story**: {node.story_id}\n\n**node**: `{node_id}`\n\n"
                           f"**retry**: {request.attempt}",
            # `storyloom ui STORY` lists the story's workflows by StoryId: retries included.
            search_attributes=TypedSearchAttributes([SearchAttributePair(STORY_ID, node.story_id),
                                                     SearchAttributePair(NODE_ID, node_id)]),
        )
    except RPCError as exc:
        raise CliFailure(f"Could not start {workflow_id} (is a retry of this node already "
                         f"running? storyloom watch {workflow_id}): {exc.message}",
                         EXIT_USAGE) from exc
    if not as_json:
        print(f"retry {workflow_id} started{await ui_suffix(settings, workflow_id)}",
              file=sys.stderr)
    try:
        async with unserved_watch(client, queues_needed(gpu=request.gpu), "image retry"):
            result = await handle.result()
    except asyncio.CancelledError:  # Ctrl-C: the retry is durable and keeps running
        print(still_running_note(workflow_id, "image retry"), file=sys.stderr, flush=True)
        raise
    except WorkflowFailureError as err:
        logger.error("retry %s failed", workflow_id, exc_info=err, extra=FILE_ONLY)
        cause = err.cause
        message = getattr(cause, "message", None) or str(cause or err)
        raise CliFailure(f"The image retry failed ({workflow_id}): {message}",
                         EXIT_FAILED) from err
    print(result.model_dump_json() if as_json else
          result_line(result, settings, ui=await ui_answers(settings)))
    if result.image_status is not ImageStatus.DONE:  # the retry's one job is the picture
        if not as_json:
            print(f"The picture of node {node_id} failed again: {result.image_error}",
                  file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
