"""The story repository on SQLite and PostgreSQL: idempotent writes, tree paths, characters,
images, render leases, and bad input that writes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from activities.errors import StoreError
from activities.store.db import Store
from activities.store.models import Asset, Base, Character, Node, NodeCharacter, Story
from activities.store.repository import RenderLease, StoryRepository
from workflows_temporal.contracts import (
    AttachImageInput,
    CastCharacter,
    ImageStatus,
    LoadContextInput,
    SaveNodeInput,
    UpsertCharactersInput,
)


def wf() -> str:
    return f"scene-{uuid.uuid4().hex[:8]}"


def scene(workflow_id: str, story_id: str, parent: str | None, summary: str) -> SaveNodeInput:
    return SaveNodeInput(
        workflow_id=workflow_id, story_id=story_id, parent_node_id=parent,
        direction=f"then {summary}", title=summary.title(), text=f"Text of {summary}.",
        summary=summary, model="llama3.2",
    )


async def count(store: Store, model: type[Base]) -> int:
    async with store.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def new_story(repo: StoryRepository) -> str:
    ctx = await repo.load_context(LoadContextInput(workflow_id=wf(), direction="A lighthouse"))
    return ctx.story_id


def image(tmp_path: Path, name: str) -> tuple[str, str]:
    data = f"png bytes of {name}".encode()
    path = tmp_path / f"{name}.png"
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


# ---- nodes and stories ----------------------------------------------------------------------


async def test_save_node_twice_with_one_workflow_id_keeps_one_row(
    store: Store, repo: StoryRepository
) -> None:
    sid = await new_story(repo)
    key = wf()
    first = await repo.save_node(scene(key, sid, None, "arrival"))
    again = await repo.save_node(scene(key, sid, None, "arrival"))

    assert first.created and not again.created
    assert again.node_id == first.node_id and again.depth == 0
    assert await count(store, Node) == 1
    node = await repo.get_node(first.node_id)
    assert (node.title, node.image_status) == ("Arrival", "pending")
    assert (await repo.get_story(sid)).title == "Arrival"  # the first scene names the story
    assert abs(node.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_concurrent_saves_of_one_scene_create_one_node(
    store: Store, repo: StoryRepository
) -> None:
    sid = await new_story(repo)
    key = wf()
    results = await asyncio.gather(*(repo.save_node(scene(key, sid, None, "x")) for _ in range(4)))
    assert sum(r.created for r in results) == 1
    assert len({r.node_id for r in results}) == 1
    assert await count(store, Node) == 1


async def test_load_context_of_a_new_story_creates_it_once(
    store: Store, repo: StoryRepository
) -> None:
    inp = LoadContextInput(workflow_id=wf(), direction="A clockwork city")
    first = await repo.load_context(inp)
    again = await repo.load_context(inp)
    raced = await asyncio.gather(*(repo.load_context(inp) for _ in range(3)))

    assert {first.story_id, again.story_id, *(c.story_id for c in raced)} == {first.story_id}
    assert (first.premise, first.depth, first.summaries) == ("A clockwork city", 0, [])
    assert [s.id for s in await repo.list_stories()] == [first.story_id]
    assert await count(store, Story) == 1


async def test_context_holds_the_summaries_of_its_own_branch_root_first(
    repo: StoryRepository,
) -> None:
    sid = await new_story(repo)
    root = await repo.save_node(scene(wf(), sid, None, "root"))
    a = await repo.save_node(scene(wf(), sid, root.node_id, "left one"))
    b = await repo.save_node(scene(wf(), sid, a.node_id, "left two"))
    c = await repo.save_node(scene(wf(), sid, root.node_id, "right one"))

    ctx = await repo.load_context(
        LoadContextInput(workflow_id=wf(), direction="go on", story_id=sid,
                         parent_node_id=b.node_id)
    )
    assert ctx.summaries == ["root", "left one", "left two"]
    assert (ctx.depth, ctx.parent_node_id, b.depth) == (3, b.node_id, 2)

    # Only the parent: the story is the parent's.
    right = await repo.load_context(
        LoadContextInput(workflow_id=wf(), direction="go on", parent_node_id=c.node_id)
    )
    assert (right.story_id, right.summaries) == (sid, ["root", "right one"])

    assert [n.id for n in await repo.path_to_root(b.node_id)] == [
        root.node_id, a.node_id, b.node_id
    ]
    tree = [n.id for n in await repo.story_nodes(sid)]
    assert tree == [root.node_id, a.node_id, b.node_id, c.node_id]


# ---- characters and images ------------------------------------------------------------------


async def test_first_description_of_a_character_stays_canonical(repo: StoryRepository) -> None:
    sid = await new_story(repo)
    n1 = await repo.save_node(scene(wf(), sid, None, "one"))
    n2 = await repo.save_node(scene(wf(), sid, n1.node_id, "two"))
    first = await repo.upsert_characters(UpsertCharactersInput(
        story_id=sid, node_id=n1.node_id,
        characters=[CastCharacter(name="Mira Vale", look="silver hair, green coat"),
                    CastCharacter(name="Oskar", look="")],
    ))
    later = await repo.upsert_characters(UpsertCharactersInput(
        story_id=sid, node_id=n2.node_id,
        characters=[CastCharacter(name="oskar", look="a tall sailor"),
                    CastCharacter(name="  mira   VALE ", look="red hair, no coat")],
    ))

    assert [c.look for c in first.characters] == ["silver hair, green coat", ""]
    assert [(c.name, c.look) for c in later.characters] == [
        ("Oskar", "a tall sailor"),  # first real description fills an empty one
        ("Mira Vale", "silver hair, green coat"),
    ]
    assert len(await repo.list_characters(sid)) == 2

    await repo.set_character_look(sid, "MIRA VALE", "short black hair")
    ctx = await repo.load_context(
        LoadContextInput(workflow_id=wf(), direction="x", story_id=sid, parent_node_id=n2.node_id)
    )
    assert {c.name: c.look for c in ctx.characters}["Mira Vale"] == "short black hair"


async def test_two_scenes_meeting_a_new_character_at_once_store_one_look(
    store: Store, repo: StoryRepository
) -> None:
    sid = await new_story(repo)
    n1 = await repo.save_node(scene(wf(), sid, None, "one"))
    n2 = await repo.save_node(scene(wf(), sid, n1.node_id, "two"))
    results = await asyncio.gather(*(
        repo.upsert_characters(UpsertCharactersInput(
            story_id=sid, node_id=n.node_id, characters=[CastCharacter(name="Ada", look=look)]))
        for n, look in ((n1, "a red scarf"), (n2, "a blue scarf"))
    ))
    looks = {r.characters[0].look for r in results}
    assert len(looks) == 1 and looks <= {"a red scarf", "a blue scarf"}
    assert await count(store, Character) == 1 and await count(store, NodeCharacter) == 2


async def test_first_good_render_becomes_the_characters_reference(
    store: Store, repo: StoryRepository, tmp_path: Path
) -> None:
    sid = await new_story(repo)
    n1 = await repo.save_node(scene(wf(), sid, None, "one"))
    n2 = await repo.save_node(scene(wf(), sid, n1.node_id, "two"))
    cast = [CastCharacter(name="Mira", look="silver hair")]
    await repo.upsert_characters(UpsertCharactersInput(story_id=sid, node_id=n1.node_id,
                                                       characters=cast))
    await repo.upsert_characters(UpsertCharactersInput(
        story_id=sid, node_id=n2.node_id,
        characters=[*cast, CastCharacter(name="Bob", look="round glasses")]))

    await repo.attach_image(AttachImageInput(node_id=n1.node_id, status=ImageStatus.FAILED,
                                             error="ComfyUI node 3 failed"))
    assert all(c.reference_image is None for c in await repo.list_characters(sid))

    path1, sha1 = image(tmp_path, "one")
    done1 = AttachImageInput(node_id=n1.node_id, status=ImageStatus.DONE, image_path=path1,
                             sha256=sha1, prompt_id="p-1", template="scene", seed=2**64 - 1,
                             note="ComfyUI lost the job; resubmitted")
    await repo.attach_image(done1)
    await repo.attach_image(done1)  # a retried activity
    path2, sha2 = image(tmp_path, "two")
    await repo.attach_image(AttachImageInput(node_id=n2.node_id, status=ImageStatus.DONE,
                                             image_path=path2, sha256=sha2))

    refs = {c.name: c.reference_image for c in await repo.list_characters(sid)}
    assert refs == {"Mira": path1, "Bob": path2}
    node = await repo.get_node(n1.node_id)
    assert (node.image_status, node.image_path, node.image_sha256, node.image_error) == (
        "done", path1, sha1, None)
    assert (node.image_seed, node.image_template, node.image_prompt_id) == (2**64 - 1, "scene",
                                                                           "p-1")
    assert [n["text"] for n in node.notes] == ["ComfyUI lost the job; resubmitted"]
    async with store.sessions() as s:
        sizes = (await s.execute(select(Asset.sha256, Asset.size))).all()
    assert sorted(sizes) == sorted([(sha1, len(b"png bytes of one")),
                                    (sha2, len(b"png bytes of two"))])


# ---- render leases --------------------------------------------------------------------------


async def test_render_lease_goes_to_the_newest_attempt(repo: StoryRepository) -> None:
    lease = RenderLease(repo, holder="worker-a")
    pid = str(uuid.uuid4())
    assert await lease.take(pid, 2)
    assert not await lease.take(pid, 1)  # a stale attempt is fenced off
    assert await lease.take(pid, 2)  # the holder may confirm again
    assert await lease.take(pid, 3)
    assert not await lease.take(pid, 2)


async def test_concurrent_lease_takes_never_let_an_older_attempt_win_last(
    repo: StoryRepository,
) -> None:
    pid = str(uuid.uuid4())
    same = await asyncio.gather(*(repo.take_render_lease(pid, 1, f"w{i}") for i in range(5)))
    assert all(same)  # first takes race on the insert: no unique-constraint error escapes

    pid = str(uuid.uuid4())
    attempts = [3, 1, 5, 2, 4, 1, 5]
    won = await asyncio.gather(*(repo.take_render_lease(pid, a, "w") for a in attempts))
    assert all(w for a, w in zip(attempts, won, strict=True) if a == 5)
    assert not await repo.take_render_lease(pid, 4, "late")
    assert await repo.take_render_lease(pid, 5, "w")


# ---- bad input writes nothing ---------------------------------------------------------------


async def test_unknown_parent_is_refused_and_nothing_is_written(
    store: Store, repo: StoryRepository
) -> None:
    sid = await new_story(repo)
    with pytest.raises(StoreError, match="node 'n_missing' does not exist") as err:
        await repo.save_node(scene(wf(), sid, "n_missing", "orphan"))
    assert "storyloom show" in str(err.value) and not err.value.retryable
    assert await count(store, Node) == 0


async def test_parent_of_another_story_is_refused(store: Store, repo: StoryRepository) -> None:
    one, two = await new_story(repo), await new_story(repo)
    root = await repo.save_node(scene(wf(), one, None, "root"))
    with pytest.raises(StoreError, match=f"belongs to story '{one}', not to story '{two}'"):
        await repo.save_node(scene(wf(), two, root.node_id, "stray"))
    with pytest.raises(StoreError, match="belongs to story"):
        await repo.load_context(LoadContextInput(workflow_id=wf(), direction="x", story_id=two,
                                                 parent_node_id=root.node_id))
    with pytest.raises(StoreError, match="belongs to story"):
        await repo.upsert_characters(UpsertCharactersInput(
            story_id=two, node_id=root.node_id, characters=[CastCharacter(name="A", look="b")]))
    assert await count(store, Node) == 1
    assert await count(store, Character) == 0 and await count(store, NodeCharacter) == 0


async def test_unknown_ids_are_refused_without_writing(
    store: Store, repo: StoryRepository
) -> None:
    with pytest.raises(StoreError, match="story 's_nope' does not exist"):
        await repo.load_context(LoadContextInput(workflow_id=wf(), direction="x", story_id="s_nope"))
    with pytest.raises(StoreError, match="story 's_nope' does not exist"):
        await repo.save_node(scene(wf(), "s_nope", None, "x"))
    with pytest.raises(StoreError, match="node 'n_nope' does not exist"):
        await repo.attach_image(AttachImageInput(node_id="n_nope", status=ImageStatus.FAILED))
    with pytest.raises(StoreError, match="node 'n_nope' does not exist"):
        await repo.get_node("n_nope")
    assert await count(store, Story) == 0 and await count(store, Node) == 0


async def test_incomplete_image_leaves_the_node_unchanged(
    store: Store, repo: StoryRepository
) -> None:
    sid = await new_story(repo)
    node = await repo.save_node(scene(wf(), sid, None, "one"))
    with pytest.raises(StoreError, match="needs its path and sha256"):
        await repo.attach_image(AttachImageInput(node_id=node.node_id, status=ImageStatus.DONE,
                                                 image_path="/x.png"))
    with pytest.raises(StoreError, match="64 lowercase hex"):
        await repo.attach_image(AttachImageInput(node_id=node.node_id, status=ImageStatus.DONE,
                                                 image_path="/x.png", sha256="abc", note="n"))
    with pytest.raises(StoreError, match="no character named 'Nobody'"):
        await repo.set_character_image(sid, "Nobody", "/x.png", "a" * 64)
    stored = await repo.get_node(node.node_id)
    assert (stored.image_status, stored.image_path, stored.notes) == ("pending", None, [])
    assert await count(store, Asset) == 0
