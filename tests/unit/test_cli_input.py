"""The first ten minutes (issue 12): every mistake a new user makes is refused before anything
starts, with exit 2 and one sentence that says what to do.

Temporal is pointed at a closed port: a command that got as far as starting a workflow would
say so ("Temporal is not reachable"). None of these may get there.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.store.db import open_store, upgrade
from emulators.ollama import OllamaEmulator
from starter.character_command import picture_problem
from tests.fixtures.common import free_port
from workflows_temporal.contracts import MAX_DIRECTION_CHARS, MAX_STYLE_CHARS

CLI = [sys.executable, "-m", "starter.cli"]


def storyloom(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path / "data"),
                "STORYLOOM_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
                "STORYLOOM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
                "COLUMNS": "100", **env}
    for name in ("TEMPORAL_ADDRESS", "OLLAMA_HOST", "STORYLOOM_DATABASE_URL"):
        full_env.pop(name, None)
    return subprocess.run([*CLI, *args], env=full_env, capture_output=True, text=True,
                          timeout=60, check=False)


def refused(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr containing ``words``, no workflow tried."""
    message = run.stderr.strip()
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert run.stdout == "", run.stdout
    assert len(message.splitlines()) == 1, message
    assert "Temporal" not in message and "validation error" not in message, message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("direction", ["", "   ", "\n\t"])
def test_a_blank_direction_is_refused_in_one_sentence(tmp_path: Path, direction: str) -> None:
    refused(storyloom(tmp_path, "scene", direction), "empty")


@pytest.mark.parametrize(("args", "limit"), [
    (["scene", "x" * (MAX_DIRECTION_CHARS + 1)], f"{MAX_DIRECTION_CHARS:,}"),
    (["story", "a fox " * 800], f"{MAX_DIRECTION_CHARS:,}"),
    (["scene", "A fox", "--style", "y" * (MAX_STYLE_CHARS + 1)], str(MAX_STYLE_CHARS)),
    (["scene", "A fox", "--seed", "-1"], "18446744073709551615"),
    (["story", "A fox", "--scenes", "0"], "1,000"),
    (["story", "A fox", "--scenes", "1001"], "1,000"),
])
def test_every_limit_is_checked_before_anything_starts(tmp_path: Path, args: list[str],
                                                       limit: str) -> None:
    refused(storyloom(tmp_path, *args), limit)


def test_an_unknown_template_is_refused_and_help_lists_the_templates(tmp_path: Path) -> None:
    refused(storyloom(tmp_path, "scene", "A fox", "--template", "nope"),
            "'nope'", "probe, scene.")
    refused(storyloom(tmp_path, "story", "A fox", STORYLOOM_TEMPLATE="nope"),
            "STORYLOOM_TEMPLATE")
    refused(storyloom(tmp_path, "retry-image", "n_1", "--template", "nope"), "'nope'")
    helped = storyloom(tmp_path, "scene", "--help", COLUMNS="200")
    assert helped.returncode == 0
    # the reference variant is internal (tests/unit/test_cli_templates.py): never offered
    assert "scene_with_reference" not in helped.stdout and "probe, scene" in helped.stdout


@pytest.mark.parametrize("args", [
    ["story", "pause"], ["story", "cancel"], ["story", "unpause"],
    ["story", "pause", "the", "world"], ["story", "resume", "s_1"], ["story", "--resume", "s_1"],
    ["story", "continue", "s_1"],
])
def test_control_verbs_are_never_read_as_a_premise(tmp_path: Path, args: list[str]) -> None:
    message = refused(storyloom(tmp_path, *args))
    assert "STORY" in message


@pytest.mark.parametrize(("args", "words"), [
    (["scene", "A fox", "--story", "s_nope"], ["no story 's_nope'", "storyloom list"]),
    (["scene", "A fox", "--parent", "n_nope"], ["no node 'n_nope'", "storyloom tree"]),
    (["story", "--continue", "s_nope"], ["no story 's_nope'"]),
])
def test_unknown_ids_are_refused_before_anything_starts(tmp_path: Path, args: list[str],
                                                        words: list[str]) -> None:
    refused(storyloom(tmp_path, *args), *words)


async def test_an_unknown_model_is_refused_when_ollama_answers(
    tmp_path: Path, ollama_emulator: OllamaEmulator
) -> None:
    run = await asyncio.to_thread(storyloom, tmp_path, "scene", "A fox", "--model", "nope",
                                  STORYLOOM_OLLAMA_URL=ollama_emulator.url)
    refused(run, "'nope'", "ollama pull nope", "installed:")
    story = await asyncio.to_thread(storyloom, tmp_path, "story", "A fox",
                                    STORYLOOM_OLLAMA_URL=ollama_emulator.url,
                                    STORYLOOM_TEXT_MODEL="nope")
    refused(story, "'nope'")


async def _story_with_mira(data: Path) -> str:
    data.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{data / 'storyloom.db'}"
    await upgrade(url)
    async with await open_store(url) as store:
        story = await store.repo.create_story("A lighthouse keeper")
        await store.repo.set_character_look(story.id, "Mira", "a tall keeper in a grey coat")
        return str(story.id)


async def _cast(data: Path, story_id: str) -> list[tuple[str, str, str | None]]:
    async with await open_store(f"sqlite+aiosqlite:///{data / 'storyloom.db'}") as store:
        return [(c.name, c.look, c.reference_image)
                for c in await store.repo.list_characters(story_id)]


async def test_character_commands_refuse_what_cannot_work(tmp_path: Path) -> None:
    sid = await _story_with_mira(tmp_path / "data")
    before = await _cast(tmp_path / "data", sid)
    text = tmp_path / "not-a-picture.png"
    text.write_bytes(b"hello you!")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return storyloom(tmp_path, "character", *args)

    refused(await asyncio.to_thread(run, "set-image", sid, "Mira", str(text)),
            "not a PNG, JPEG or WebP picture")
    refused(await asyncio.to_thread(run, "describe", sid, "Bob", "a fisherman"),
            "no character named 'Bob'", "Mira")
    refused(await asyncio.to_thread(run, "describe", sid, "Mira", "   "), "empty")
    refused(await asyncio.to_thread(run, "describe", "s_nope", "Mira", "a keeper"),
            "no story 's_nope'")
    assert await _cast(tmp_path / "data", sid) == before  # nothing invented, nothing attached
    assert not (tmp_path / "data" / "media" / "references").exists()


def test_picture_check_accepts_real_headers_only() -> None:
    png = (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (64).to_bytes(4, "big") * 2
           + b"\x08\x02\x00\x00\x00" + b"\x00" * 40)
    assert picture_problem(png) is None
    assert picture_problem(b"\xff\xd8\xff\xe0" + b"\x00" * 100) is None
    assert picture_problem(b"hello you!") is not None
    assert picture_problem(png[:20]) is not None


def test_a_premise_at_the_limit_still_makes_directions_within_it() -> None:
    from starter.story_command import directions_for
    from workflows_temporal.contracts import SceneRequest

    premise = "word " * (MAX_DIRECTION_CHARS // 5)
    directions = directions_for(premise.strip(), 3, first=998)
    assert all(len(d) <= MAX_DIRECTION_CHARS for d in directions)
    for direction in directions:  # what StoryWorkflow builds for each scene must validate
        SceneRequest(direction=direction, model="m", template="scene")


@pytest.mark.parametrize(("env", "words"), [
    ({"STORYLOOM_GPU_SHARING": "bogus"}, ["STORYLOOM_GPU_SHARING", "'bogus'", "separate"]),
    ({"STORYLOOM_CONTEXT_BUDGET_TOKENS": "0"}, ["STORYLOOM_CONTEXT_BUDGET_TOKENS"]),
])
def test_a_bad_setting_is_one_sentence_naming_the_variable(tmp_path: Path, env: dict[str, str],
                                                         words: list[str]) -> None:
    refused(storyloom(tmp_path, "scene", "A fox", **env), *words)
