"""The store's activities as a worker runs them: a scene's four db steps, retries, and errors
that tell the engine whether to retry."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError
from temporalio.activity import _Definition
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.store.activities import StoreActivities
from activities.store.db import open_store
from activities.store.repository import StoryRepository
from workflows_temporal.contracts import (
    AttachImageInput,
    CastCharacter,
    ImageStatus,
    LoadContextInput,
    SaveNodeInput,
    UpsertCharactersInput,
)
from workflows_temporal.policies import STEPS


def test_activities_are_registered_under_the_step_names() -> None:
    acts = StoreActivities.__new__(StoreActivities)
    names = {
        _Definition.must_from_callable(getattr(acts, m)).name
        for m in ("load_context", "save_node", "upsert_characters", "attach_image")
    }
    assert names == {"load_context", "save_node", "upsert_characters", "attach_image"}
    assert names <= set(STEPS)


async def test_a_scene_through_the_four_store_steps_survives_retries(
    repo: StoryRepository, tmp_path: Path
) -> None:
    acts, env = StoreActivities(repo), ActivityEnvironment()
    workflow_id = f"scene-{uuid.uuid4().hex[:8]}"

    ctx_in = LoadContextInput(workflow_id=workflow_id, direction="A moth seeks the moon")
    ctx = await env.run(acts.load_context, ctx_in)
    assert (await env.run(acts.load_context, ctx_in)).story_id == ctx.story_id  # retried

    save = SaveNodeInput(workflow_id=workflow_id, story_id=ctx.story_id, direction="begin",
                         title="Moth", text="Once...", summary="a moth sets out", model="m")
    saved = await env.run(acts.save_node, save)
    retried = await env.run(acts.save_node, save)
    assert saved.created and not retried.created and retried.node_id == saved.node_id

    cast = await env.run(acts.upsert_characters, UpsertCharactersInput(
        story_id=ctx.story_id, node_id=saved.node_id,
        characters=[CastCharacter(name="Moth", look="dusty grey wings")]))
    assert [(c.name, c.look, c.reference_image) for c in cast.characters] == [
        ("Moth", "dusty grey wings", None)]

    png = tmp_path / "moth.png"
    png.write_bytes(b"moth image")
    done = AttachImageInput(node_id=saved.node_id, status=ImageStatus.DONE, image_path=str(png),
                            sha256=hashlib.sha256(b"moth image").hexdigest())
    assert await env.run(acts.attach_image, done) is None
    await env.run(acts.attach_image, done)

    node = await repo.get_node(saved.node_id)
    assert (node.image_status, node.image_path) == ("done", str(png))
    assert [n.id for n in await repo.story_nodes(ctx.story_id)] == [saved.node_id]
    assert (await repo.list_characters(ctx.story_id))[0].reference_image == str(png)


async def test_bad_input_becomes_a_final_store_error(repo: StoryRepository) -> None:
    acts, env = StoreActivities(repo), ActivityEnvironment()
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.save_node, SaveNodeInput(
            workflow_id="w", story_id="s_000000000000", direction="d", title="t", text="x",
            summary="s", model="m"))
    assert err.value.type == "StoreError" and err.value.non_retryable
    assert "story 's_000000000000' does not exist" in err.value.message


async def test_database_failures_stay_retryable(db_url: str) -> None:
    # A store that was never upgraded: every query fails inside the database.
    store = await open_store(db_url)
    try:
        acts, env = StoreActivities(store.repo), ActivityEnvironment()
        with pytest.raises(DBAPIError) as err:
            await env.run(acts.load_context, LoadContextInput(workflow_id="w", direction="d"))
        assert not isinstance(err.value, ApplicationError)  # the engine retries it
    finally:
        await store.close()
