"""`storyloom scene` and `storyloom watch`: start or follow a SceneWorkflow and report its result.

Exit codes: 0 the scene exists (also when only its image failed), 1 the scene failed,
2 bad usage or configuration. ``--json`` prints exactly the SceneResult JSON on stdout.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError

from activities.store.ids import story_id_for
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure, root_cause, root_message
from starter.progress import Mode, follow
from starter.settings import Settings, image_settings
from starter.temporal_client import TemporalUnreachable, connect
from starter.ui_link import ui_answers
from workflows_temporal.contracts import ImageStatus, SceneRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

__all__ = ["build_request", "cancel_scene", "result_line", "run_scene", "ui_link", "ui_suffix",
           "watch_scene"]

logger = logging.getLogger(__name__)


def build_request(settings: Settings, direction: str, **options: Any) -> SceneRequest:
    """The request, with model/template/gpu_sharing filled from settings when not given."""
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("model", settings.text_model)
    options.setdefault("template", settings.template)
    options.setdefault("gpu_sharing", settings.gpu_sharing)
    options.setdefault("gpu", settings.gpu)  # which GPU's image queue renders it
    options.setdefault("embed_model", settings.embed_model or None)  # story memory (issue 6)
    options.setdefault("context_budget_tokens", settings.context_budget_tokens)
    options.update({k: v for k, v in image_settings(settings).items() if k not in options})
    try:
        return SceneRequest(direction=direction, **options)
    except ValueError as exc:
        raise CliFailure(f"The scene request is invalid: {exc}", EXIT_USAGE) from exc


def _first_words(text: str, n: int = 8) -> str:
    words = text.split()
    return " ".join(words[:n]) + ("…" if len(words) > n else "")


def ui_link(settings: Settings, workflow_id: str) -> str:
    host = settings.temporal_address.rpartition(":")[0] or "127.0.0.1"
    return (f"http://{host}:{settings.temporal_ui_port}/namespaces/"
            f"{settings.temporal_namespace}/workflows/{workflow_id}")


async def ui_suffix(settings: Settings, workflow_id: str) -> str:
    """`` — UI: <link>`` when the Temporal UI answers; nothing when it does not (headless)."""
    return f" — UI: {ui_link(settings, workflow_id)}" if await ui_answers(settings) else ""


def result_line(result: SceneResult, settings: Settings, *, ui: bool = True) -> str:
    """The one-line summary a user reads after a scene (``ui``: with the workflow's UI link)."""
    head = f"“{result.title}” — node {result.node_id} (story {result.story_id})"
    if result.image_status == ImageStatus.DONE:
        image = f"image: {result.image_path}"
    elif result.image_status == ImageStatus.FAILED:
        image = f"image FAILED: {result.image_error or 'no reason recorded'}"
    else:
        image = f"image {result.image_status.value}"
    line = f"{head}; {image}; text: storyloom show {result.node_id}"
    return line + (f"; UI: {ui_link(settings, result.workflow_id)}" if ui else "")


def _failure_paragraph(err: BaseException, workflow_id: str) -> str:
    cause = root_cause(err)
    if isinstance(cause, CancelledError):
        return f"The scene {workflow_id} was cancelled."
    if isinstance(cause, TerminatedError):
        return f"The scene {workflow_id} was terminated."
    if isinstance(cause, TimeoutError):
        return f"The scene {workflow_id} timed out."
    message = root_message(cause)
    return (f"The scene failed ({workflow_id}): {message}. Nothing was lost; run "
            f"`storyloom doctor` to check the services, then try again.")


async def _await_and_report(
    client: Client, handle: WorkflowHandle[Any, Any], settings: Settings, *, as_json: bool
) -> int:
    mode: Mode = "quiet" if as_json else ("rich" if sys.stderr.isatty() else "plain")
    try:
        result = await follow(client, handle, mode=mode)
    except WorkflowFailureError as err:
        logger.error("scene %s failed", handle.id, exc_info=err, extra=FILE_ONLY)
        raise CliFailure(_failure_paragraph(err, handle.id), EXIT_FAILED) from err
    if as_json:
        print(result.model_dump_json())
    else:
        print(result_line(result, settings, ui=await ui_answers(settings)))
    return EXIT_OK


async def _client(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except TemporalUnreachable as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc


async def _story_of_node(settings: Settings, node_id: str) -> str | None:
    """The story of ``node_id`` in the database, or None when it cannot be read (the workflow
    finds it then, and sets the search attribute itself)."""
    from activities.store.db import open_store

    try:
        store = await open_store(settings.effective_database_url)
    except Exception:  # noqa: BLE001 - a label only: the scene itself reports real errors
        return None
    try:
        return str((await store.repo.get_node(node_id)).story_id)
    except Exception:  # noqa: BLE001
        return None
    finally:
        await store.close()


async def run_scene(
    settings: Settings, request: SceneRequest, *, as_json: bool = False, detach: bool = False
) -> int:
    """Start one SceneWorkflow, then follow it (or print its id and return with ``detach``)."""
    client = await _client(settings)
    workflow_id = f"scene-{uuid.uuid4()}"
    details = "\n\n".join([
        f"**direction**: {request.direction}",
        f"**model**: {request.model}",
        f"**template**: {request.template if request.illustrate else '(no illustration)'}",
    ] + ([f"**style**: {request.style}"] if request.style else []))
    # A new story's id derives from this workflow's id, so the UI can find it from the start;
    # a branch belongs to its parent node's story.
    story_id = request.story_id or (
        story_id_for(workflow_id) if request.parent_node_id is None
        else await _story_of_node(settings, request.parent_node_id))
    if request.parent_node_id is not None:
        story = story_id or "the story of that node"
        details += f"\n\n**story**: {story}, branching from node `{request.parent_node_id}`"
    elif request.story_id:
        details += f"\n\n**story**: {request.story_id}"
    else:
        details += f"\n\n**story**: {story_id} (new: the direction is its premise)"
    attrs = None
    if story_id:
        from workflows_temporal.scene import STORY_ID

        attrs = TypedSearchAttributes([SearchAttributePair(STORY_ID, story_id)])
    try:
        handle = await client.start_workflow(
            "SceneWorkflow", request, id=workflow_id, task_queue=SCENE_WORKFLOW_QUEUE,
            result_type=SceneResult, static_summary=f"Scene: {_first_words(request.direction)}",
            static_details=details, search_attributes=attrs,
        )
    except RPCError as exc:
        raise CliFailure(f"Temporal at {settings.temporal_address} refused to start the scene: "
                         f"{exc}", EXIT_USAGE) from exc
    logger.info("started %s", workflow_id)
    if detach:
        if not as_json:
            print(f"started; follow it with: storyloom watch {workflow_id}", file=sys.stderr)
            if suffix := await ui_suffix(settings, workflow_id):
                print(suffix.removeprefix(" — "), file=sys.stderr)
        print(workflow_id)
        return EXIT_OK
    if not as_json:
        print(f"scene {workflow_id} started{await ui_suffix(settings, workflow_id)}",
              file=sys.stderr)
    return await _await_and_report(client, handle, settings, as_json=as_json)


async def watch_scene(settings: Settings, workflow_id: str, *, as_json: bool = False) -> int:
    """Follow a running (or finished) scene workflow; same display and exit codes as ``scene``."""
    client = await _client(settings)
    handle = client.get_workflow_handle(workflow_id, result_type=SceneResult)
    try:
        await handle.describe()
    except RPCError as exc:
        raise CliFailure(f"No workflow {workflow_id!r} in namespace "
                         f"{settings.temporal_namespace}: {exc.message}", EXIT_USAGE) from exc
    return await _await_and_report(client, handle, settings, as_json=as_json)


async def cancel_scene(settings: Settings, workflow_id: str) -> int:
    """Ask the workflow to cancel; the node (if any) records 'cancelled by user'."""
    client = await _client(settings)
    try:
        await client.get_workflow_handle(workflow_id).cancel()
    except RPCError as exc:
        raise CliFailure(f"Could not cancel {workflow_id!r}: {exc.message}", EXIT_USAGE) from exc
    print(f"cancel requested for {workflow_id}")
    return EXIT_OK
