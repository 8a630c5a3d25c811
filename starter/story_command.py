"""`storyloom story`: start, follow, pause, resume or cancel a StoryWorkflow (N scenes in a row).

Exit codes: 0 the story's scenes exist (also when an image failed), 1 it failed or was
cancelled, 2 bad usage or configuration. ``--json`` prints exactly
``{"story_id": ..., "nodes": [<SceneResult>, ...]}`` on stdout.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from typing import Any

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from activities.store.ids import story_id_for
from starter.console import count
from starter.logs import FILE_ONLY
from starter.outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliFailure, root_message
from starter.progress import Mode
from starter.scene_command import ui_suffix
from starter.settings import Settings, image_settings
from starter.story_progress import follow_story
from starter.temporal_client import TemporalUnreachable, connect
from workflows_temporal.contracts import ImageStatus, StoryRequest, StoryResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE
from workflows_temporal.scene import STORY_ID
from workflows_temporal.scene_prompts import continuation, first_words
from workflows_temporal.story import scene_workflow_id

__all__ = ["CONTROL_ACTIONS", "build_story_request", "control_story", "directions_for",
           "resume_story", "run_story", "story_json"]

logger = logging.getLogger(__name__)
CONTROL_ACTIONS = ("pause", "resume", "cancel")


def directions_for(premise: str, scenes: int, first: int = 1) -> list[str]:
    """Scene 1 is the premise itself; every later one continues it (the premise words also
    steer story memory's recall towards the story's thread)."""
    return [premise if k == 1 else continuation(k, premise)
            for k in range(first, first + scenes)]


def build_story_request(settings: Settings, premise: str, scenes: int, *, illustrate: bool,
                        **extra: Any) -> StoryRequest:
    if scenes < 1:
        raise CliFailure("--scenes must be at least 1", EXIT_USAGE)
    if not premise.strip():
        raise CliFailure("a story needs a premise: storyloom story \"A fox ...\"", EXIT_USAGE)
    directions = extra.pop("directions", None) or directions_for(premise, scenes)
    try:
        return StoryRequest(
            directions=directions, illustrate=illustrate, model=settings.text_model,
            template=settings.template, gpu_sharing=settings.gpu_sharing,
            embed_model=settings.embed_model or None,
            context_budget_tokens=settings.context_budget_tokens,
            **{**image_settings(settings), **extra},
        )
    except ValueError as exc:
        raise CliFailure(f"The story request is invalid: {exc}", EXIT_USAGE) from exc


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


async def _report(client: Client, handle: WorkflowHandle[Any, StoryResult], settings: Settings,
                  *, as_json: bool) -> int:
    mode: Mode = "quiet" if as_json else ("rich" if sys.stderr.isatty() else "plain")
    try:
        result = await follow_story(client, handle, mode=mode)
    except WorkflowFailureError as err:
        logger.error("story %s failed", handle.id, exc_info=err, extra=FILE_ONLY)
        message = root_message(err)
        raise CliFailure(f"The story {handle.id} stopped: {message}. The scenes written so far "
                         "are kept; continue with `storyloom story --resume STORY_ID`.",
                         EXIT_FAILED) from err
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


async def run_story(settings: Settings, premise: str, request: StoryRequest, *,
                    as_json: bool = False, detach: bool = False) -> int:
    """Start a StoryWorkflow and follow it (or print its id with ``detach``)."""
    client = await _client(settings)
    handle = await start_story(settings, client, request, premise, request.story_id)
    if detach:
        print(handle.id)
        return EXIT_OK
    if not as_json:
        print(f"story {handle.id} started{await ui_suffix(settings, handle.id)}",
              file=sys.stderr)
    return await _report(client, handle, settings, as_json=as_json)


async def _running_story(client: Client, ident: str) -> WorkflowHandle[Any, StoryResult]:
    """The running StoryWorkflow of a story id (or the workflow id itself)."""
    if ident.startswith("story-"):
        return client.get_workflow_handle(ident, result_type=StoryResult)
    query = (f'WorkflowType = "StoryWorkflow" AND StoryId = "{ident}" '
             'AND ExecutionStatus = "Running"')
    async for found in client.list_workflows(query, limit=1):
        return client.get_workflow_handle(found.id, result_type=StoryResult)
    raise CliFailure(f"No running story {ident!r}. `storyloom story --resume {ident}` continues "
                     "a stopped one.", EXIT_USAGE)


async def control_story(settings: Settings, action: str, ident: str) -> int:
    """pause | resume | cancel the running StoryWorkflow of ``ident``."""
    client = await _client(settings)
    if action == "resume" and not ident.startswith("story-"):
        try:
            handle = await _running_story(client, ident)
        except CliFailure:
            raise CliFailure(f"No running story {ident!r} to resume. To continue a stopped "
                             f"story: storyloom story --resume {ident}", EXIT_USAGE) from None
    else:
        handle = await _running_story(client, ident)
    try:
        if action == "cancel":
            await handle.cancel()
        else:
            await handle.signal(action)
    except RPCError as exc:
        raise CliFailure(f"Could not {action} {handle.id}: {exc.message}", EXIT_USAGE) from exc
    print(f"{action} requested for {handle.id}")
    return EXIT_OK


async def resume_story(settings: Settings, story_id: str, scenes: int, *, illustrate: bool,
                       as_json: bool = False, detach: bool = False) -> int:
    """Continue a stopped story: a new StoryWorkflow from the story's last (deepest) node."""
    from starter.tree_command import open_store

    store = await open_store(settings)
    try:
        story = await store.repo.get_story(story_id)
        nodes = await store.repo.story_nodes(story_id)
    except Exception as exc:
        raise CliFailure(f"Cannot resume story {story_id!r}: {exc}", EXIT_USAGE) from exc
    finally:
        await store.close()
    last = max(nodes, key=lambda n: (n.depth, n.created_at), default=None)
    depth = last.depth + 1 if last is not None else 0
    directions = directions_for(story.premise, scenes, first=depth + 1)
    request = build_story_request(settings, story.premise, scenes, illustrate=illustrate,
                                  directions=directions, story_id=story_id,
                                  parent_node_id=last.id if last else None)
    return await run_story(settings, story.premise, request, as_json=as_json, detach=detach)
