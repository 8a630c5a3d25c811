"""Where a workflow's time went, from its history: activity run time versus Temporal's share.

``split(history)`` sums, over the activities, the time between ACTIVITY_TASK_STARTED and
COMPLETED ("running"), between SCHEDULED and STARTED ("activity dispatch"), and the rest of
the workflow's life ("workflow tasks": dispatching and running the workflow code).
"""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

__all__ = ["split"]


def split(history: WorkflowHistory) -> dict[str, Any]:
    """Seconds per share of the workflow's life, and per activity type (running time)."""
    events = history.events
    start = events[0].event_time.ToMicroseconds()
    end = events[-1].event_time.ToMicroseconds()
    scheduled: dict[int, tuple[str, int]] = {}
    started: dict[int, int] = {}
    running = dispatch = 0
    per_step: dict[str, float] = {}
    for e in events:
        t = e.event_time.ToMicroseconds()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[e.event_id] = (e.activity_task_scheduled_event_attributes.activity_type.name, t)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = e.activity_task_started_event_attributes.scheduled_event_id
            started[sid] = t
            dispatch += t - scheduled[sid][1]
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            run = t - started[sid]
            running += run
            name = scheduled[sid][0]
            per_step[name] = per_step.get(name, 0.0) + run / 1e6
    total = end - start
    return {
        "total_s": total / 1e6,
        "activities_running_s": running / 1e6,
        "activity_dispatch_s": dispatch / 1e6,
        "workflow_tasks_s": (total - running - dispatch) / 1e6,
        "activities": len(started),
        "per_step_s": {k: round(v, 3) for k, v in per_step.items()},
    }
