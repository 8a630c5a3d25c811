"""`storyloom story`: start, follow, pause, unpause, cancel or continue a StoryWorkflow (N scenes).

Exit codes: 0 the story's scenes exist (also when an image failed), 1 it failed or was
cancelled, 2 bad usage or configuration. ``--json`` prints exactly
``{"story_id": ..., "nodes": [<SceneResult>, ...]}`` on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from typing import Any

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities.store.ids import story_id_for
from starter.cancelling import cancel_run, describe_run
from starter.console import count
from starter.input_checks import (
    check_direction,
    check_image_size,
    check_scenes,
    check_template,
    explain_invalid,
)
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure, root_message
from starter.pollers import queues_needed, unserved_watch
from starter.preflight import check_checkpoint, check_model, place_scene
from starter.progress import Mode
from starter.scene_command import still_running_note, ui_suffix
from starter.service_urls import warn_other_urls
from starter.settings import Settings, image_settings, text_settings
from starter.store_access import require_story
from starter.story_progress import follow_story
from starter.story_running import refuse_if_story_running
from starter.temporal_client import TemporalUnreachable, connect
from workflows_temporal.contracts import (
    MAX_DIRECTION_CHARS,
    ImageStatus,
    StoryRequest,
    StoryResult,
)
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE
from workflows_temporal.scene import STORY_ID
from workflows_temporal.scene_prompts import continuation, first_words
from workflows_temporal.story import scene_workflow_id

__all__ = ["CONTROL_ACTIONS", "build_story_request", "continue_story", "control_story",
           "control_words_problem", "directions_for", "report_story", "run_story", "story_json"]

logger = logging.getLogger(__name__)
# `storyloom story VERB STORY` controls a running story. `pause`/`unpause` hold and release it
# between scenes; `--continue STORY` (a different word on purpose) writes more scenes of a
# stopped story. These words are never read as a premise.
CONTROL_ACTIONS = ("pause", "unpause", "cancel")
AMBIGUOUS_ACTIONS = ("resume", "continue")
_SIGNALS = {"pause": "pause", "unpause": "resume"}  # the StoryWorkflow's signal names


def control_words_problem(words: list[str]) -> str | None:
    """Why ``words`` (the story command's arguments) cannot be run, when they start with a
    control verb but are not ``VERB STORY``; None when they are fine (a control or a premise)."""
    if not words:
        return None
    verb = words[0]
    if verb in AMBIGUOUS_ACTIONS or verb == "--resume":
        said = "--resume" if verb == "--resume" else f"storyloom story {verb}"
        return (f"`{said}` could mean two things: to let a paused story go "
                "on, `storyloom story unpause STORY`; to write more scenes of a stopped "
                "story, `storyloom story --continue STORY --scenes N`. (A premise that starts "
                "with this word goes in quotes.)")
    if verb in CONTROL_ACTIONS and len(words) != 2:
        return (f"`storyloom story {verb}` takes exactly one story: `storyloom story {verb} "
                "STORY` (a story id from `storyloom list`, or the story's workflow id). A "
                "premise that starts with this word goes in quotes.")
    return None


def _continuation(premise: str, k: int) -> str:
    """``continuation(k, premise)``, the premise shortened so it fits MAX_DIRECTION_CHARS."""
    room = MAX_DIRECTION_CHARS - len(continuation(k, ""))
    return continuation(k, premise if len(premise) <= room
                        else premise[:room - 1].rstrip() + "…")


def directions_for(premise: str, scenes: int, first: int = 1) -> list[str]:
    """Scene 1 is the premise itself; every later one continues it (the premise words also
    steer story memory's recall towards the story's thread). Each fits MAX_DIRECTION_CHARS."""
    return [premise if k == 1 else _continuation(premise, k)
            for k in range(first, first + scenes)]


def build_story_request(settings: Settings, premise: str, scenes: int, *, illustrate: bool,
                        **extra: Any) -> StoryRequest:
    """The StoryRequest; CliFailure (exit 2, one sentence) for a blank or too long premise,
    --scenes out of range or an unknown STORYLOOM_TEMPLATE. Nothing has started yet."""
    check_scenes(scenes)
    premise = check_direction(premise, what="premise")
    if illustrate:
        check_template(settings.template, source="STORYLOOM_TEMPLATE")
        check_image_size(settings.template, settings.image_width, settings.image_height)
    directions = extra.pop("directions", None) or directions_for(premise, scenes)
    try:
        return StoryRequest(
            directions=directions, illustrate=illustrate, model=settings.text_model,
            template=settings.template, gpu_sharing=settings.gpu_sharing,
            embed_model=settings.embed_model or None,
            context_budget_tokens=settings.context_budget_tokens,
            **{**image_settings(settings), **text_settings(settings), **extra},
        )
    except ValidationError as exc:
        raise explain_invalid(exc, "story request") from exc


def story_json(result: StoryResult) -> str:
    """The --json document: the story id and every scene's SceneResult, in story order."""
    return json.dumps({"story_id": result.story_id,
                       "nodes": [s.model_dump(mode="json") for s in result.scenes]})


async def _client(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except TemporalUnreachable as exc:
        raise CliFailure(str(exc), EXIT_USAGE) from exc


async def start_story(settings: Settings, client: Client, request: StoryRequest, premise: str,
                 story_id: str | None = None) -> WorkflowHandle[Any, StoryResult]:
    workflow_id = f"story-{uuid.uuid4()}"
    # A new story's id is known before it exists: the first scene's load_context derives it.
    sid = story_id or story_id_for(scene_workflow_id(workflow_id, 0))
    details = "\n\n".join([f"**premise**: {premise}", f"**scenes**: {len(request.directions)}",
                           f"**model**: {request.model}",
                           f"**gpu sharing**: {request.gpu_sharing.value}"])
    try:
        return await client.start_workflow(
            "StoryWorkflow", request, id=workflow_id, task_queue=SCENE_WORKFLOW_QUEUE,
            result_type=StoryResult, static_summary=f"Story: {first_words(premise, 8, 80)}",
            static_details=details,
            search_attributes=TypedSearchAttributes([SearchAttributePair(STORY_ID, sid)]),
        )
    except RPCError as exc:
        raise CliFailure(f"Temporal at {settings.temporal_address} refused to start the story: "
                         f"{exc}", EXIT_USAGE) from exc


async def _story_id_of(handle: WorkflowHandle[Any, StoryResult]) -> str:
    """The story id a StoryWorkflow carries (search attribute StoryId), or STORY_ID."""
    try:
        found = (await handle.describe()).typed_search_attributes.get(STORY_ID)
    except RPCError:
        found = None
    return found or "STORY_ID"


async def _report(client: Client, handle: WorkflowHandle[Any, StoryResult], settings: Settings,
                  *, as_json: bool, illustrate: bool = True) -> int:
    mode: Mode = "quiet" if as_json else ("rich" if sys.stderr.isatty() else "plain")
    try:
        async with unserved_watch(client, queues_needed(illustrate=illustrate), "story"):
            result = await follow_story(client, handle, mode=mode)
    except asyncio.CancelledError:  # Ctrl-C: the story is durable and keeps running
        print(still_running_note(handle.id, "story"), file=sys.stderr, flush=True)
        raise
    except WorkflowFailureError as err:
        logger.error("story %s failed", handle.id, exc_info=err, extra=FILE_ONLY)
        message = root_message(err)
        story_id = await _story_id_of(handle)
        raise CliFailure(f"The story {handle.id} stopped: {message}. The scenes written so far "
                         f"are kept; continue with `storyloom story --continue {story_id} "
                         "--scenes N`.", EXIT_FAILED) from err
    if as_json:
        print(story_json(result))
        return EXIT_OK
    for k, scene in enumerate(result.scenes, 1):
        image = scene.image_path if scene.image_status == ImageStatus.DONE else (
            f"image {scene.image_status.value}" + (f": {scene.image_error}"
                                                   if scene.image_error else ""))
        print(f"{k}. “{scene.title}” — node {scene.node_id}; {image}; "
              f"text {scene.timings.text_s:.1f}s, image {scene.timings.illustrate_s:.1f}s")
    print(f"story {result.story_id}: {count(len(result.scenes), 'scene')} in "
          f"{result.makespan_s:.1f}s; "
          f"tree: storyloom tree {result.story_id}")
    return EXIT_OK


async def report_story(client: Client, workflow_id: str, settings: Settings, *,
                       as_json: bool = False) -> int:
    """Follow a story workflow started elsewhere (``storyloom watch``)."""
    handle = client.get_workflow_handle(workflow_id, result_type=StoryResult)
    return await _report(client, handle, settings, as_json=as_json)


async def run_story(settings: Settings, premise: str, request: StoryRequest, *,
                    as_json: bool = False, detach: bool = False) -> int:
    """Start a StoryWorkflow and follow it (or print its id with ``detach``); the text model is
    checked first (exit 2, nothing created, when Ollama answers without it)."""
    assert request.model is not None
    await check_model(settings, request.model)
    if request.illustrate and request.template is not None:
        await check_checkpoint(settings, request.template, request.checkpoint)
    await warn_other_urls(settings, illustrate=request.illustrate)
    client = await _client(settings)
    handle = await start_story(settings, client, request, premise, request.story_id)
    if detach:
        print(handle.id)
        return EXIT_OK
    if not as_json:
        print(f"story {handle.id} started{await ui_suffix(settings, handle.id)}",
              file=sys.stderr)
    return await _report(client, handle, settings, as_json=as_json,
                         illustrate=request.illustrate)


async def _running_story(settings: Settings, client: Client, ident: str, action: str
                         ) -> WorkflowHandle[Any, StoryResult]:
    """The running StoryWorkflow of a story id (or the workflow id itself)."""
    if ident.startswith("story-"):
        return client.get_workflow_handle(ident, result_type=StoryResult)
    query = (f'WorkflowType = "StoryWorkflow" AND StoryId = "{ident}" '
             'AND ExecutionStatus = "Running"')
    async for found in client.list_workflows(query, limit=1):
        return client.get_workflow_handle(found.id, result_type=StoryResult)
    await require_story(settings, ident)
    raise CliFailure(f"No story {ident!r} is running, so there is nothing to {action}; to "
                     f"write more scenes of a stopped story: `storyloom story --continue "
                     f"{ident} --scenes N`.", EXIT_USAGE)


async def control_story(settings: Settings, action: str, ident: str) -> int:
    """pause | unpause | cancel the running StoryWorkflow of ``ident``; says what happened."""
    client = await _client(settings)
    handle = await _running_story(settings, client, ident, action)
    if action == "cancel":
        outcome = await cancel_run(client, handle.id, what="story")
        print(outcome.message)
        return EXIT_OK
    desc = await describe_run(client, handle.id, "story")
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise CliFailure(f"The story {handle.id} already ended "
                         f"({desc.status.name.lower() if desc.status else 'unknown'}): there "
                         f"is nothing to {action}.", EXIT_USAGE)
    try:
        await handle.signal(_SIGNALS[action])
    except RPCError as exc:
        raise CliFailure(f"Could not {action} {handle.id}: {exc.message}", EXIT_USAGE) from exc
    print(f"{action} sent to {handle.id}: " + (
        "it holds before its next scene (the running scene finishes)" if action == "pause"
        else "it goes on with its next scene"))
    return EXIT_OK


async def continue_story(settings: Settings, story_id: str, scenes: int, *, illustrate: bool,
                         parent: str | None = None, as_json: bool = False,
                         detach: bool = False) -> int:
    """Write more scenes of a stopped story: a new StoryWorkflow from the story's latest scene
    (its only branch tip), or from ``parent``; exit 2 when the story is unknown or ambiguous."""
    from starter.tree_command import open_store

    placement = await place_scene(settings, story_id, parent)
    assert placement.story_id is not None
    await refuse_if_story_running(await _client(settings), placement.story_id)
    store = await open_store(settings)
    try:
        story = await store.repo.get_story(placement.story_id)
        depth = (await store.repo.get_node(placement.parent_node_id)).depth + 1 if (
            placement.parent_node_id) else 0
    finally:
        await store.close()
    if placement.note:
        print(placement.note, file=sys.stderr)
    directions = directions_for(story.premise, scenes, first=depth + 1)
    request = build_story_request(settings, story.premise, scenes, illustrate=illustrate,
                                  directions=directions, story_id=placement.story_id,
                                  parent_node_id=placement.parent_node_id)
    return await run_story(settings, story.premise, request, as_json=as_json, detach=detach)
