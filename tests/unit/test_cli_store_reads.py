"""Commands that take a story or node id say an unknown id once, with one hint (exit 2), and
commands that only read create no store where there is none (issue 12 findings 5 and 6)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.store.db import upgrade

CLI = [sys.executable, "-m", "starter.cli"]


def _run(args: list[str], cwd: Path, data_dir: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORYLOOM_DATA_DIR": data_dir, "COLUMNS": "100"}
    return subprocess.run([*CLI, *args], check=False, env=env, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@pytest.mark.parametrize(("args", "said"), [
    (["tree", "s_nope"], "There is no story 's_nope' in "),
    (["export", "s_nope", "--markdown", "out.md"], "There is no story 's_nope' in "),
    (["character", "list", "s_nope"], "There is no story 's_nope' in "),
    (["show", "s_nope"], "There is no node or story 's_nope' in "),
    (["ui", "s_nope"], "There is no story 's_nope' in "),
    (["retry-image", "n_nope"], "There is no node 'n_nope' in "),
])
def test_an_unknown_id_is_one_sentence_with_one_hint(tmp_path: Path, args: list[str],
                                                     said: str) -> None:
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{tmp_path / 'storyloom.db'}"))
    refused = _run(args, tmp_path, str(tmp_path))

    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(said), line
    assert line.count("`storyloom ") == 1, line  # one hint, said once
    assert "does not exist" not in line and "leave the story id out" not in line
    assert not (tmp_path / "out.md").exists()


def test_reading_where_there_is_no_store_says_so_and_creates_nothing(tmp_path: Path) -> None:
    listed = _run(["list"], tmp_path, "rel-data")  # a relative data dir, as a user types it

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(
        f"no stories yet: no store at {tmp_path / 'rel-data' / 'storyloom.db'}"), listed.stdout
    for args in (["show", "s_x"], ["tree", "s_x"], ["character", "list", "s_x"],
                 ["export", "s_x", "--markdown"], ["ui", "s_x"]):
        refused = _run(args, tmp_path, "rel-data")
        assert refused.returncode == 2, (args, refused.stderr)
        [line] = refused.stderr.strip().splitlines()
        assert "no stories yet: no store at" in line, line
    assert list(tmp_path.iterdir()) == []
