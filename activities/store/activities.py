"""The Temporal activities of the story store: load_context, save_node, upsert_characters,
attach_image (steps 1, 3, 5 and 8 of a scene), each a thin call into the repository.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio import activity

from activities.calllog import CallTimer, call_context
from activities.errors import StoryloomError, to_application_error
from activities.store.repository import StoryRepository
from workflows_temporal.contracts import (
    AttachImageInput,
    ImageParams,
    LoadContextInput,
    SavedNode,
    SaveNodeInput,
    SceneContext,
    UpsertCharactersInput,
    UpsertCharactersResult,
)

__all__ = ["StoreActivities"]

I = TypeVar("I")
T = TypeVar("T")


class StoreActivities:
    """The store's activities, registered under the step names of ``policies.STEPS``.

    Every one is idempotent (a retry changes nothing twice). A ``StoreError`` (bad input: an
    unknown story or node, a parent of another story) becomes a non-retryable ``ApplicationError``
    of type "StoreError"; database failures (connection lost, lock timeout, deadlock) propagate
    as they are and are retried by the engine.
    """

    def __init__(self, repo: StoryRepository, *, where: str = "store") -> None:
        self._repo = repo
        self._where = where  # for the call log: the database, without its password

    async def _call(self, step: str, method: Callable[[I], Awaitable[T]], inp: I) -> T:
        info = activity.info()
        with call_context(
            workflow_id=info.workflow_id, attempt=info.attempt, activity=info.activity_type
        ):
            try:
                with CallTimer("store", step, self._where):
                    return await method(inp)
            except StoryloomError as exc:
                raise to_application_error(exc) from exc

    @activity.defn(name="load_context")
    async def load_context(self, inp: LoadContextInput) -> SceneContext:
        """Step 1: the story (created on first call when new), path summaries, characters."""
        return await self._call("load_context", self._repo.load_context, inp)

    @activity.defn(name="save_node")
    async def save_node(self, inp: SaveNodeInput) -> SavedNode:
        """Step 3: one node per workflow id; a retry returns it with created=False."""
        return await self._call("save_node", self._repo.save_node, inp)

    @activity.defn(name="upsert_characters")
    async def upsert_characters(self, inp: UpsertCharactersInput) -> UpsertCharactersResult:
        """Step 5: canonical looks and reference pictures of the scene's cast."""
        return await self._call("upsert_characters", self._repo.upsert_characters, inp)

    @activity.defn(name="load_image_params")
    async def load_image_params(self, node_id: str) -> ImageParams:
        """RetryImageWorkflow: the node's image template, seed, prompt and state (read only)."""
        return await self._call("load_image_params", self._repo.image_params, node_id)

    @activity.defn(name="attach_image")
    async def attach_image(self, inp: AttachImageInput) -> None:
        """Step 8: the render's outcome on the node; the first good render becomes references."""
        await self._call("attach_image", self._repo.attach_image, inp)
