"""Long output never wraps (issue 12 finding 8): a straight story's tree does not indent, and
`character list` on an 80-column terminal keeps every picture path on one line."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from activities.store.db import open_store, upgrade
from workflows_temporal.contracts import CastCharacter, SaveNodeInput, UpsertCharactersInput

CLI = [sys.executable, "-m", "starter.cli"]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def _story(data_dir: Path, scenes: int, branch_at: int | None = None) -> tuple[str, Path]:
    """A story of ``scenes`` scenes in a row (and two branches after scene ``branch_at``), its
    characters' reference pictures at a long path; returns (story id, picture path)."""
    url = f"sqlite+aiosqlite:///{data_dir / 'storyloom.db'}"
    await upgrade(url)
    store = await open_store(url)
    picture = data_dir / "media" / "characters" / ("a-rather-long-folder-name-" * 2) / \
        "s_0123456789ab-zoe-reference-picture.png"
    try:
        story = (await store.repo.create_story("Zoë and Łukasz sail home")).id
        parent, ids = None, []
        for k in range(scenes):
            saved = await store.repo.save_node(SaveNodeInput(
                workflow_id=f"wf-{k}", story_id=story, parent_node_id=parent,
                direction=f"Scene {k + 1}", title=f"Scene number {k + 1} of the voyage",
                text="They sailed.", summary="They sailed.", model="llama3.2"))
            ids.append(saved.node_id)
            parent = saved.node_id
        if branch_at is not None:
            for b in range(2):
                await store.repo.save_node(SaveNodeInput(
                    workflow_id=f"wf-b{b}", story_id=story, parent_node_id=ids[branch_at - 1],
                    direction="What if", title=f"Branch {b + 1}", text="Or not.",
                    summary="Or not.", model="llama3.2"))
        await store.repo.upsert_characters(UpsertCharactersInput(
            story_id=story, node_id=ids[0], characters=[
                CastCharacter(name="Zoë", look="a tall sailor in a yellow coat"),
                CastCharacter(name="Łukasz", look="a small boy with a red scarf")]))
        for name in ("Zoë", "Łukasz"):
            await store.repo.set_character_image(story, name, str(picture), "0" * 64)
    finally:
        await store.close()
    return story, picture


def _on_terminal(args: list[str], data_dir: Path, columns: int) -> str:
    """The command's screen on a pseudo-terminal ``columns`` wide (escape codes removed)."""
    main, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(data_dir), "COLUMNS": str(columns),
           "TERM": "xterm"}
    proc = subprocess.Popen([*CLI, *args], stdin=tty, stdout=tty, stderr=tty, env=env)
    os.close(tty)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(60)
    os.close(main)
    return _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")


def test_a_straight_story_does_not_indent_and_branches_do(tmp_path: Path) -> None:
    story, _ = asyncio.run(_story(tmp_path, 20, branch_at=20))
    for command in ("tree", "show"):
        screen = _on_terminal([command, story], tmp_path, 120)
        lines = [ln for ln in screen.splitlines() if "Scene number" in ln and "story s_" not in ln]
        assert len(lines) == 20, screen
        indents = {len(ln) - len(ln.lstrip("│├└─ ")) for ln in lines}
        assert len(indents) == 1, screen  # one depth for the whole chain
        branches = [ln for ln in screen.splitlines() if "Branch " in ln]
        assert len(branches) == 2 and all(
            len(b) - len(b.lstrip("│├└─ ")) > indents.pop() for b in branches[:1]), screen
        assert max(len(ln) for ln in screen.splitlines()) <= 120, screen


def test_character_list_keeps_each_path_on_one_line_at_80_columns(tmp_path: Path) -> None:
    story, picture = asyncio.run(_story(tmp_path, 1))
    screen = _on_terminal(["character", "list", story], tmp_path, 80)

    assert [ln.strip() for ln in screen.splitlines()].count(str(picture)) == 2, screen
    assert "Zoë" in screen and "a small boy with a red scarf" in screen
