"""`storyloom story`, branches, `tree` and `character` end to end: real dev server, both
emulators and a worker as processes, driven through the CLI the way a user runs it."""

from __future__ import annotations

import json
import sqlite3
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from activities.comfyui.activities import render_prompt_id
from tests.fixtures.processes import Services, start_services
from workflows_temporal.contracts import SceneResult

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

PREMISE = "A lighthouse keeper named Mira befriends a talking fox called Tobin"
BUDGET = 40  # tokens: small, so by scene 3 the path is over budget and memory is recalled


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    root = tmp_path_factory.mktemp("story-cli")
    running = await start_services(
        root, extra_env={"STORYLOOM_CONTEXT_BUDGET_TOKENS": str(BUDGET)})
    try:
        yield running
    finally:
        await running.close()


def tiny_png() -> bytes:
    """A real 1x1 PNG (signature, IHDR, IDAT, IEND with their CRCs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def rows(db_file: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args).fetchall()]


async def write_prompts(services: Services) -> list[str]:
    """The scene-writing prompts the Ollama emulator received (streamed, no JSON format)."""
    requests = await services.emulator_get(services.ollama_url, "/_emulator/requests")
    return [r["body"]["prompt"] for r in requests
            if r["path"] == "/api/generate" and isinstance(r["body"], dict)
            and r["body"].get("prompt") and "format" not in r["body"]
            and r["body"].get("stream") is not False]


def prompt_for(prompts: list[str], direction: str) -> str:
    [found] = [p for p in prompts if f"What happens in this scene: {direction}\n" in p]
    return found


async def image_prompt(services: Services, workflow_id: str) -> dict[str, Any]:
    job = await services.emulator_get(
        services.comfy_url, f"/api/jobs/{render_prompt_id(workflow_id, 'render')}")
    return dict(job["workflow"]["prompt"])


def positive_text(graph: dict[str, Any]) -> str:
    sampler = next(n for n in graph.values() if n["class_type"] == "KSampler")
    return str(graph[sampler["inputs"]["positive"][0]]["inputs"]["text"])


async def test_four_scene_story_keeps_its_chain_memory_and_faces(services: Services) -> None:
    run = await services.storyloom("story", PREMISE, "--scenes", "4", "--json", timeout=120)

    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert set(doc) == {"story_id", "nodes"}
    scenes = [SceneResult.model_validate(n) for n in doc["nodes"]]
    assert len(scenes) == 4 and all(s.image_status == "done" for s in scenes)
    sid = doc["story_id"]
    nodes = {r["id"]: r for r in rows(services.db_file, "SELECT * FROM nodes WHERE story_id = ?",
                                      sid)}
    chain = [s.node_id for s in scenes]
    assert set(nodes) == set(chain)
    assert [nodes[n]["parent_id"] for n in chain] == [None, *chain[:-1]]
    assert all(nodes[n]["summary_embedding"] for n in chain)  # every summary remembered

    # Characters: stored once each, one canonical look, repeated verbatim in image prompts.
    cast = rows(services.db_file, "SELECT * FROM characters WHERE story_id = ?", sid)
    names = [c["name"] for c in cast]
    assert {"Mira", "Tobin"} <= set(names) and len(names) == len(set(names))
    looks = {c["id"]: c for c in cast}
    drawn: set[str] = set()
    for k, scene in enumerate(scenes):
        present = [r["character_id"] for r in rows(
            services.db_file, "SELECT character_id FROM node_characters WHERE node_id = ?",
            scene.node_id)]
        graph = await image_prompt(services, scene.workflow_id)
        text = positive_text(graph)
        for cid in present:
            assert f"{looks[cid]['name']}: {looks[cid]['look']}" in text
        uses_reference = any(n["class_type"] == "LoadImage" for n in graph.values())
        assert uses_reference == bool(drawn & set(present)), f"scene {k + 1}"
        assert nodes[scene.node_id]["image_template"] == (
            "scene_with_reference" if uses_reference else "scene")
        drawn |= set(present)
    assert drawn and all(c["reference_asset_id"] for c in cast if c["id"] in drawn)

    # Rolling summary and recalled memories in the prompts Ollama received.
    prompts = await write_prompts(services)
    last = prompt_for(prompts, f"Scene 4: continue the story of {PREMISE}")
    rolling, _, rest = last.partition("Earlier scenes that matter now:")
    assert nodes[chain[2]]["summary"] in rolling  # the parent's summary: the rolling window
    recalled = rest.split("Characters already met")[0]
    assert any(nodes[n]["summary"] in recalled for n in chain[:2]), last


async def test_branches_never_see_each_other(services: Services) -> None:
    root = await services.storyloom("scene", PREMISE, "--no-illustrate", "--json")
    assert root.returncode == 0, root.stderr
    root_id = SceneResult.model_validate_json(root.stdout).node_id
    branch: dict[str, SceneResult] = {}
    for name, what in (("a", "What if Mira sails to the northern reef"),
                       ("b", "What if Tobin digs under the old chapel")):
        run = await services.storyloom("scene", what, "--parent", root_id, "--no-illustrate",
                                       "--json")
        assert run.returncode == 0, run.stderr
        branch[name] = SceneResult.model_validate_json(run.stdout)
    follow = {"a": "Mira reaches the reef at dawn", "b": "Tobin finds a locked crypt"}
    for name, what in follow.items():
        run = await services.storyloom("scene", what, "--parent", branch[name].node_id,
                                       "--no-illustrate", "--json")
        assert run.returncode == 0, run.stderr

    prompts = await write_prompts(services)
    text = {n: rows(services.db_file, "SELECT * FROM nodes WHERE id = ?", b.node_id)[0]
            for n, b in branch.items()}
    for mine, other in (("a", "b"), ("b", "a")):
        prompt = prompt_for(prompts, follow[mine])
        assert text[mine]["summary"] in prompt
        assert text[other]["summary"] not in prompt
        assert text[other]["direction"] not in prompt and text[other]["title"] not in prompt

    tree = await services.storyloom("tree", branch["a"].story_id)
    assert tree.returncode == 0, tree.stderr
    for scene in branch.values():
        assert scene.node_id in tree.stdout and scene.title in tree.stdout


async def test_user_takes_control_of_a_character(services: Services, tmp_path: Path) -> None:
    run = await services.storyloom("scene", PREMISE, "--json")
    assert run.returncode == 0, run.stderr
    sid = SceneResult.model_validate_json(run.stdout).story_id
    look = "a lanky woman with a silver braid and a sea-green oilskin"
    described = await services.storyloom("character", "describe", sid, "Mira", look)
    assert described.returncode == 0, described.stderr
    # `describe` never invents a character the scenes have not named (issue 12).
    invented = await services.storyloom("character", "describe", sid, "Nobody", "a ghost")
    assert invented.returncode == 2 and "no character named 'Nobody'" in invented.stderr
    picture = tmp_path / "mira.png"
    picture.write_bytes(tiny_png())
    set_image = await services.storyloom("character", "set-image", sid, "Mira", str(picture))
    assert set_image.returncode == 0, set_image.stderr

    listing = await services.storyloom("character", "list", sid)
    assert listing.returncode == 0, listing.stderr
    flat = " ".join(listing.stdout.split())
    assert "silver braid" in flat and "Mira" in flat
    [mira] = rows(services.db_file, "SELECT look FROM characters WHERE story_id = ? AND name = ?",
                  sid, "Mira")
    assert mira["look"] == look
    [ref] = rows(services.db_file, "SELECT a.path FROM characters c JOIN assets a ON "
                 "a.id = c.reference_asset_id WHERE c.story_id = ? AND c.name = 'Mira'", sid)
    assert Path(ref["path"]).read_bytes() == picture.read_bytes()
    unknown = await services.storyloom("character", "set-image", sid, "Nobody", str(picture))
    assert unknown.returncode == 2 and "Nobody" in unknown.stderr
