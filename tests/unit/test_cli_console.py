"""Front-end commands print one paragraph, never a log line of an outside call (issue 12
finding 4): the calls they make are logged to the log file under the data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.common import free_port

CLI = [sys.executable, "-m", "starter.cli"]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path), "COLUMNS": "100",
           "STORYLOOM_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "STORYLOOM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
           "STORYLOOM_COMFYUI_URL": f"http://127.0.0.1:{free_port()}"}
    for name in ("TEMPORAL_ADDRESS", "OLLAMA_HOST"):
        env.pop(name, None)
    return subprocess.run([*CLI, *args], check=False, env=env, capture_output=True, text=True,
                          timeout=90)  # piped, as in a script


def test_scene_before_up_is_one_paragraph_and_the_call_is_in_the_log(tmp_path: Path) -> None:
    refused = _run(["scene", "a fox"], tmp_path)

    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Temporal is not reachable at 127.0.0.1:"), line
    assert refused.stdout == ""
    logged = (tmp_path / "logs" / "cli.log").read_text(encoding="utf-8")
    assert "/api/tags" in logged  # the model check's call went to the file


def test_doctor_piped_prints_its_checks_and_no_log_lines(tmp_path: Path) -> None:
    checked = _run(["doctor"], tmp_path)

    assert checked.returncode == 1, checked.stdout
    for line in (checked.stdout + checked.stderr).splitlines():
        assert not line.lstrip().startswith("{"), line
        assert " WARNING " not in line and " ERROR " not in line, line


def test_help_has_no_odd_placeholders_and_listing_lines_wrap_whole(tmp_path: Path) -> None:
    env_cols = {"COLUMNS": "80"}
    story = subprocess.run([*CLI, "story", "--help"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, **env_cols}, check=False)
    assert story.returncode == 0
    assert "CONTINUE_" not in story.stdout and " PARENT " not in story.stdout, story.stdout
    assert "--model" in story.stdout  # `story` takes --model, as the model hint says
    top = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env_cols}, check=False)
    rows = top.stdout.splitlines()
    for name in ("cancel", "ui"):
        at = next(i for i, row in enumerate(rows) if row.startswith(f"│ {name} "))
        entry = [rows[at]]
        for row in rows[at + 1:]:
            if not row.startswith("│   "):
                break
            entry.append(row)
        text = [row.strip("│ ").strip() for row in entry]
        assert all(len(line) > 50 for line in text[:-1]), entry  # no line cut mid-sentence


def test_scene_takes_several_words_like_story(tmp_path: Path) -> None:
    for command in ("scene", "story"):
        run = _run([command, "a", "fox", "at", "dusk"], tmp_path)
        assert run.returncode == 2, run.stderr
        assert "unexpected extra argument" not in run.stderr
        assert run.stderr.startswith("Temporal is not reachable"), run.stderr


def test_ctrl_c_during_up_startup_prints_no_banner(tmp_path: Path) -> None:
    import signal
    import time

    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path),
           "STORYLOOM_TEMPORAL_ADDRESS": address,
           "STORYLOOM_OLLAMA_URL": f"http://127.0.0.1:{free_port()}",
           "STORYLOOM_COMFYUI_URL": f"http://127.0.0.1:{free_port()}"}
    proc = subprocess.Popen([*CLI, "up", "--emulate", "--headless", "--no-worker"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "temporal.db").exists():  # the dev server is starting
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    assert "storyloom is up" not in out, out
    assert proc.returncode == 130, (out, err)
    host, _, port = address.rpartition(":")
    from starter.ports import port_in_use

    assert not port_in_use(host, int(port))  # the dev server it started is stopped
