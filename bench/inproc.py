"""The product's activity objects built in the benchmark process, run without Temporal.

``InProcess`` builds LlmActivities, ImageActivities and StoreActivities exactly as the worker
does (``starter.worker.build_activities``) and runs them through temporalio's
``ActivityEnvironment``, which gives them an activity context (heartbeats, info) but no server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from temporalio.testing import ActivityEnvironment

from starter.settings import Settings
from starter.worker import ActivitySet, build_activities
from workflows_temporal.policies import DB_QUEUE, IMAGE_QUEUE, LLM_QUEUE

__all__ = ["InProcess"]

T = TypeVar("T")


class InProcess:
    """Activities by name, callable directly: ``await inproc.call("render", RenderInput(...))``.

    ``call`` raises whatever the activity raises (ApplicationError for a typed failure).
    Close with ``aclose()`` (it closes the clients and the store).
    """

    def __init__(self, acts: ActivitySet, workflow_id: str = "direct") -> None:
        self._acts = acts
        self._by_name: dict[str, Callable[..., Any]] = {}
        for queue in (DB_QUEUE, LLM_QUEUE, IMAGE_QUEUE):
            for fn in acts.by_queue.get(queue, []):
                name = getattr(fn, "__temporal_activity_definition").name
                self._by_name[name] = fn
        self.env = ActivityEnvironment()
        self.workflow_id = workflow_id

    @classmethod
    async def open(cls, settings: Settings) -> InProcess:
        return cls(await build_activities(settings, "all"))

    async def call(self, name: str, arg: Any) -> Any:
        return await self.env.run(self._by_name[name], arg)

    async def aclose(self) -> None:
        await self._acts.aclose()
