"""Recorded SceneWorkflow and StoryWorkflow histories still replay on today's code (rule 6).

A failure here means a change would break running workflows: guard it with
``workflow.patched``, or, if no workflow of the old shape can be running, regenerate the
histories with ``python -m tests.workflows.record_histories``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows_temporal.scene import SceneWorkflow
from workflows_temporal.story import StoryWorkflow

HISTORIES = Path(__file__).parent / "histories"


def scheduled_activities(raw: dict[str, object]) -> list[str]:
    events = raw["events"]
    assert isinstance(events, list)
    return [
        e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for e in events
        if "activityTaskScheduledEventAttributes" in e
    ]


@pytest.mark.parametrize("name", ["scene_happy"])
async def test_recorded_history_replays(name: str) -> None:
    text = (HISTORIES / f"{name}.json").read_text()
    # The recording covers every step, so replay exercises the whole workflow.
    assert scheduled_activities(json.loads(text)) == [
        "load_context",
        "write_scene",
        "save_node",
        "extract_cast",
        "upsert_characters",
        "free_llm_vram",
        "render",
        "attach_image",
    ]
    history = WorkflowHistory.from_json(f"{name}-recording", text)
    replayer = Replayer(workflows=[SceneWorkflow], data_converter=pydantic_data_converter)

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{name} no longer replays: {result.replay_failure}"


def started_children(raw: dict[str, object]) -> list[str]:
    events = raw["events"]
    assert isinstance(events, list)
    return [
        e["startChildWorkflowExecutionInitiatedEventAttributes"]["workflowType"]["name"]
        for e in events
        if "startChildWorkflowExecutionInitiatedEventAttributes" in e
    ]


async def test_recorded_story_history_replays() -> None:
    name = "story_pipelined"
    text = (HISTORIES / f"{name}.json").read_text()
    # Three scenes, pipelined (separate GPUs): the parent started three child scenes.
    assert started_children(json.loads(text)) == ["SceneWorkflow"] * 3
    history = WorkflowHistory.from_json(f"{name}-recording", text)
    replayer = Replayer(workflows=[StoryWorkflow], data_converter=pydantic_data_converter)

    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)

    assert result.replay_failure is None, f"{name} no longer replays: {result.replay_failure}"
