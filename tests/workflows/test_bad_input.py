"""Bad input that reaches a workflow fails the *workflow* with its reason, never its workflow
task in a loop; and a cancel ends even a run whose workflow task keeps failing (issue 12).

On the real dev server: a task failure is retried there forever, which is the trap.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from starter.cancelling import cancel_run
from starter.outcome import root_message
from tests.fixtures.common import wait_until
from workflows_temporal.contracts import MAX_DIRECTION_CHARS
from workflows_temporal.scene import SceneWorkflow
from workflows_temporal.story import StoryWorkflow, scene_workflow_id

DEADLINE_S = 30.0  # a failing task is retried every ~10 s; a failed workflow ends at once


@workflow.defn(name="BrokenWorkflow")
class BrokenWorkflow:
    """Stands for a bug: its workflow task fails on every attempt."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in workflow code")


async def _outcome(client: Client, workflow_type: str, arg: Any) -> str:
    """Run ``workflow_type`` with ``arg`` on a fresh queue; the failure's message."""
    queue = f"bad-input-{uuid.uuid4()}"
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(
            Worker(client, task_queue=queue, workflows=[SceneWorkflow, StoryWorkflow]))
        handle = await client.start_workflow(workflow_type, arg, id=f"bad-{uuid.uuid4()}",
                                             task_queue=queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), DEADLINE_S)
        assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
        return root_message(failed.value)


async def test_a_scene_request_over_its_limit_fails_the_workflow(dev_env: WorkflowEnvironment
                                                                 ) -> None:
    too_long = {"direction": "x" * (MAX_DIRECTION_CHARS + 1), "model": "m", "template": "scene"}
    message = await _outcome(dev_env.client, "SceneWorkflow", too_long)
    assert "direction" in message and str(MAX_DIRECTION_CHARS) in message, message


async def test_a_story_whose_scene_cannot_be_built_fails_with_the_reason(
    dev_env: WorkflowEnvironment,
) -> None:
    story = {"directions": ["x" * (MAX_DIRECTION_CHARS + 1)], "model": "m", "template": "scene"}
    message = await _outcome(dev_env.client, "StoryWorkflow", story)
    assert "direction" in message and str(MAX_DIRECTION_CHARS) in message, message


async def test_cancel_ends_a_run_whose_workflow_task_keeps_failing(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    queue = f"broken-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[BrokenWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        handle = await client.start_workflow("BrokenWorkflow", id=f"scene-{uuid.uuid4()}",
                                             task_queue=queue)

        async def failing() -> bool:
            raw = (await handle.describe()).raw_description
            return raw.HasField("pending_workflow_task") and raw.pending_workflow_task.attempt > 1

        await wait_until(failing, timeout=DEADLINE_S, interval=0.2, what="a failing task")
        outcome = await cancel_run(client, handle.id, wait_s=DEADLINE_S)

    assert outcome.status == "TERMINATED"
    assert "keeps failing" in outcome.message and "terminated" in outcome.message
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED


@workflow.defn(name="SceneWorkflow")
class BrokenSceneWorkflow:
    """A scene with the bug, run by the real StoryWorkflow as its child."""

    @workflow.run
    async def run(self, req: dict[str, Any]) -> None:
        raise RuntimeError("a bug in scene code")


async def test_cancel_ends_a_story_whose_scene_task_keeps_failing(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    queue = f"broken-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[StoryWorkflow, BrokenSceneWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        story = {"directions": ["A fox"], "model": "m", "template": "scene"}
        handle = await client.start_workflow("StoryWorkflow", story, id=f"story-{uuid.uuid4()}",
                                             task_queue=queue)
        child = client.get_workflow_handle(scene_workflow_id(handle.id, 0))

        async def child_failing() -> bool:
            try:
                raw = (await child.describe()).raw_description
            except Exception:  # noqa: BLE001 - not started yet
                return False
            return raw.HasField("pending_workflow_task") and raw.pending_workflow_task.attempt > 1

        await wait_until(child_failing, timeout=DEADLINE_S, interval=0.2, what="a failing child")
        outcome = await cancel_run(client, handle.id, what="story", wait_s=DEADLINE_S)

    # The story ends (its scene's failure is "terminated"), and the sentence says why.
    assert outcome.status in ("CANCELED", "FAILED"), outcome
    assert child.id in outcome.message and "terminated" in outcome.message
    assert (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
    assert (await child.describe()).status == WorkflowExecutionStatus.TERMINATED
