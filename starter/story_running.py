"""Is a StoryWorkflow of a story still writing? Asked before a second run would write the same
story: `story --continue S` and `scene --story S` refuse then (exit 2), since two runs writing
after the same scene fork the tree.

The answer comes from Temporal's visibility (the ``StoryId`` search attribute every
StoryWorkflow carries from its start), so it needs a connected client.
"""

from __future__ import annotations

from temporalio.client import Client

from starter.outcome import EXIT_USAGE, CliFailure

__all__ = ["refuse_if_story_running", "running_story_workflow"]


async def running_story_workflow(client: Client, story_id: str) -> str | None:
    """The workflow id of a running StoryWorkflow of ``story_id``, or None."""
    query = (f'WorkflowType = "StoryWorkflow" AND StoryId = "{story_id}" '
             'AND ExecutionStatus = "Running"')
    async for found in client.list_workflows(query, limit=1):
        return found.id
    return None


async def refuse_if_story_running(client: Client, story_id: str) -> None:
    """CliFailure (exit 2, one sentence naming the workflow and the three ways out) when a
    StoryWorkflow of ``story_id`` is running; nothing has been started."""
    workflow_id = await running_story_workflow(client, story_id)
    if workflow_id is None:
        return
    raise CliFailure(
        f"story {story_id} is still running (workflow {workflow_id}): pause it "
        f"(`storyloom story pause {story_id}`), cancel it (`storyloom story cancel {story_id}`) "
        f"or wait (`storyloom watch {workflow_id}`), then continue it.", EXIT_USAGE)
