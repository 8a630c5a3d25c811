"""`storyloom scene` and `storyloom watch`: start or follow a SceneWorkflow and report its result.

Exit codes: 0 the scene exists (also when only its image failed), 1 the scene failed,
2 bad usage or configuration. ``--json`` prints exactly the SceneResult JSON on stdout.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from typing import Any

from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import CancelledError, TerminatedError, TimeoutError
from temporalio.service import RPCError

from activities.store.ids import story_id_for
from starter.input_checks import (
    check_direction,
    check_image_size,
    check_seed,
    check_style,
    check_template,
    explain_invalid,
)
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure, root_cause, root_message
from starter.pollers import QueueNeed, queues_needed, unserved_watch
from starter.preflight import check_checkpoint, check_model, place_scene
from starter.progress import Mode, follow
from starter.service_urls import warn_other_urls
from starter.settings import Settings, image_settings, text_settings
from starter.story_running import refuse_if_story_running
from starter.temporal_client import TemporalUnreachable, connect
from starter.ui_link import ui_answers
from workflows_temporal.contracts import ImageStatus, SceneRequest, SceneResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

__all__ = ["build_request", "cancel_scene", "place_request", "result_line", "run_scene",
           "still_running_note", "ui_link", "ui_suffix",
           "watch_scene"]

logger = logging.getLogger(__name__)


def build_request(settings: Settings, direction: str, **options: Any) -> SceneRequest:
    """The request, with model/template/gpu_sharing filled from settings when not given.

    Raises CliFailure (exit 2, one sentence) for a blank or too long direction, an out of
    range --seed, a too long --style or an unknown template: nothing has started yet.
    """
    options = {k: v for k, v in options.items() if v is not None}
    direction = check_direction(direction)
    if "style" in options:
        options["style"] = check_style(options["style"])
    check_seed(options.get("seed"))
    if options.get("illustrate", True):
        source = "--template" if "template" in options else "STORYLOOM_TEMPLATE"
        check_template(options.get("template", settings.template), source=source)
        check_image_size(options.get("template", settings.template), settings.image_width,
                         settings.image_height)
    if "model" in options and not str(options["model"]).strip():
        raise CliFailure("--model is empty: name an Ollama model, e.g. --model llama3.2",
                         EXIT_USAGE)
    options.setdefault("model", settings.text_model)
    options.setdefault("template", settings.template)
    options.setdefault("gpu_sharing", settings.gpu_sharing)
    options.setdefault("gpu", settings.gpu)  # which GPU's image queue renders it
    options.setdefault("embed_model", settings.embed_model or None)  # story memory (issue 6)
    options.setdefault("context_budget_tokens", settings.context_budget_tokens)
    options.update({k: v for k, v in {**image_settings(settings), **text_settings(settings)}.items()
                    if k not in options})
    try:
        return SceneRequest(direction=direction, **options)
    except ValidationError as exc:
        raise explain_invalid(exc, "scene request") from exc


async def place_request(settings: Settings, request: SceneRequest) -> SceneRequest:
    """Check the story/parent ids and the text model against the services, and continue
    ``--story`` from its latest scene; CliFailure (exit 2) before anything is created."""
    placement = await place_scene(settings, request.story_id, request.parent_node_id)
    if request.story_id is not None and request.parent_node_id is None:
        # `--story S` continues from S's latest scene, which a running story is still moving
        await refuse_if_story_running(await _client(settings), request.story_id)
    if placement.note:
        print(placement.note, file=sys.stderr)
    assert request.model is not None
    await check_model(settings, request.model)
    if request.illustrate and request.template is not None:
        await check_checkpoint(settings, request.template, request.checkpoint)
    await warn_other_urls(settings, illustrate=request.illustrate)
    return request.model_copy(update={"story_id": placement.story_id,
                                       "parent_node_id": placement.parent_node_id})


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


def still_running_note(workflow_id: str, what: str = "scene") -> str:
    """What Ctrl-C leaves behind, and the commands to follow or stop it."""
    cancel = (f"storyloom story cancel {workflow_id}" if what == "story"
              else f"storyloom cancel {workflow_id}")
    return (f"Stopped watching. The {what} {workflow_id} goes on in the background: follow it "
            f"with `storyloom watch {workflow_id}`, stop it with `{cancel}`.")


async def _await_and_report(
    client: Client, handle: WorkflowHandle[Any, Any], settings: Settings, *, as_json: bool,
    needs: list[QueueNeed] | None = None,
) -> int:
    mode: Mode = "quiet" if as_json else ("rich" if sys.stderr.isatty() else "plain")
    needs = needs if needs is not None else queues_needed(gpu=settings.gpu)
    try:
        async with unserved_watch(client, needs):
            result = await follow(client, handle, mode=mode)
    except asyncio.CancelledError:  # Ctrl-C: the scene is durable and keeps running
        print(still_running_note(handle.id), file=sys.stderr, flush=True)
        raise
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
    request = await place_request(settings, request)
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
    return await _await_and_report(
        client, handle, settings, as_json=as_json,
        needs=queues_needed(illustrate=request.illustrate, gpu=request.gpu))


async def watch_scene(settings: Settings, workflow_id: str, *, as_json: bool = False) -> int:
    """Follow a running (or finished) scene or story workflow; same display and exit codes as
    ``scene`` (or ``story``)."""
    from starter.cancelling import describe_run

    client = await _client(settings)
    desc = await describe_run(client, workflow_id, "workflow")
    if desc.workflow_type == "StoryWorkflow":
        from starter.story_command import report_story

        return await report_story(client, workflow_id, settings, as_json=as_json)
    handle = client.get_workflow_handle(workflow_id, result_type=SceneResult)
    return await _await_and_report(client, handle, settings, as_json=as_json)


async def cancel_scene(settings: Settings, workflow_id: str) -> int:
    """Cancel a run and say how it ended; exit 2 when there is no such run or it had ended."""
    from starter.cancelling import cancel_run

    client = await _client(settings)
    what = "story" if workflow_id.startswith("story-") else "scene"
    outcome = await cancel_run(client, workflow_id, what=what)
    print(outcome.message)
    return EXIT_OK
