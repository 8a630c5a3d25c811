"""`storyloom retry-image NODE`: start a RetryImageWorkflow for one node and report its result.

Exit codes like `scene`: 0 the retry ran (the line says whether the image is now done or failed
again), 1 the retry workflow failed, 2 bad usage (unknown node, a done image without --force,
Temporal unreachable). ``--json`` prints exactly the SceneResult JSON on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities.errors import StoreError
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure
from starter.pollers import queues_needed, unserved_watch
from starter.scene_command import result_line, still_running_note, ui_suffix
from starter.settings import Settings, image_settings
from starter.temporal_client import TemporalUnreachable, connect
from starter.ui_link import ui_answers
from workflows_temporal.contracts import ImageStatus, RetryImageRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE
from workflows_temporal.scene import NODE_ID, STORY_ID

__all__ = ["RETRY_NOTE_PREFIX", "run_retry_image"]

logger = logging.getLogger(__name__)

RETRY_NOTE_PREFIX = "retry-image "  # every retry leaves one such note on the node


async def _node_state(settings: Settings, node_id: str) -> tuple[ImageStatus, int, str]:
    """(image status, number of retries already recorded, story id) of the node; CliFailure if
    unknown."""
    from activities.store.db import open_store, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await upgrade(settings.effective_database_url)
    store = await open_store(settings.effective_database_url)
    try:
        node = await store.repo.get_node(node_id)
    except StoreError as exc:
        raise CliFailure(f"No node {node_id!r} in {settings.effective_database_url}: "
                         "`storyloom show STORY_ID` lists a story's nodes.", EXIT_USAGE) from exc
    finally:
        await store.close()
    notes = [n.get("text", "") for n in node.notes or [] if isinstance(n, dict)]
    retries = sum(1 for text in notes if str(text).startswith(RETRY_NOTE_PREFIX))
    return ImageStatus(node.image_status), retries, str(node.story_id)


async def run_retry_image(
    settings: Settings, node_id: str, *, force: bool = False, template: str | None = None,
    as_json: bool = False,
) -> int:
    """Render ``node_id``'s image again as its own workflow and wait for it."""
    from workflows_temporal.retry_image import retry_workflow_id

    status, retries, story_id = await _node_state(settings, node_id)
    if status in (ImageStatus.PENDING, ImageStatus.RENDERING):
        raise CliFailure(f"Node {node_id}'s image is still {status.value}: its scene is "
                         "rendering it. Wait for it (storyloom watch), then retry if it fails.",
                         EXIT_USAGE)
    if status is ImageStatus.DONE and not force:
        raise CliFailure(f"Node {node_id} already has its image (done). Add --force to render "
                         "it again.", EXIT_USAGE)
    request = RetryImageRequest(
        node_id=node_id, template=template or settings.template, model=settings.text_model,
        gpu_sharing=settings.gpu_sharing, gpu=settings.gpu, attempt=retries + 1,
        **image_settings(settings),
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
            static_details=f"**story**: {story_id}\n\n**node**: `{node_id}`\n\n"
                           f"**retry**: {request.attempt}",
            # `storyloom ui STORY` lists the story's workflows by StoryId: retries included.
            search_attributes=TypedSearchAttributes([SearchAttributePair(STORY_ID, story_id),
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
    return EXIT_OK
