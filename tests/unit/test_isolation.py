"""The test suite writes only into its temporary folders, never into the real data directory
of whoever runs it (``~/.local/share/storyloom``)."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from starter.settings import Settings

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
REAL_DATA_DIR = REAL_HOME / ".local" / "share" / "storyloom"


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    if not folder.exists():
        return {}
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_settings_and_commands_without_a_data_dir_stay_out_of_the_real_one() -> None:
    before = _state(REAL_DATA_DIR)
    # A test that forgets STORYLOOM_DATA_DIR (in-process or for a `storyloom` subprocess).
    env = {k: v for k, v in os.environ.items() if k != "STORYLOOM_DATA_DIR"}
    run = subprocess.run([sys.executable, "-m", "starter.cli", "list"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)

    assert run.returncode == 0, run.stderr
    assert not Settings().data_dir.resolve().is_relative_to(REAL_HOME.resolve())
    assert _state(REAL_DATA_DIR) == before
