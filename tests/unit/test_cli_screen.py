"""What `storyloom` puts on the screen or into a pipe: help that reads, pipes and narrow
terminals that work, counts in English, links only to a UI that answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio

from activities.store.db import open_store, upgrade
from tests.fixtures.common import free_port
from tests.fixtures.storybook import StoryIds, make_story

CLI = [sys.executable, "-m", "starter.cli"]
COMMANDS = ["", "up", "emulate", "worker", "scene", "watch", "cancel", "show", "list", "doctor",
            "demo", "export", "ui", "retry-image", "story", "tree", "character",
            "character list", "character set-image", "character describe"]


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(data_dir), "COLUMNS": "100",
           "NO_COLOR": "1", "STORYLOOM_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
           "STORYLOOM_TEMPORAL_UI_PORT": str(free_port()), **extra}
    env.pop("STORYLOOM_DATABASE_URL", None)
    return env


def storyloom(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=_env(data_dir, **extra), capture_output=True,
                          text=True, timeout=60, check=False)


@pytest_asyncio.fixture(loop_scope="session")
async def library(tmp_path: Path) -> AsyncIterator[tuple[Path, StoryIds]]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite+aiosqlite:///{data_dir / 'storyloom.db'}"
    await upgrade(url)
    store = await open_store(url)
    try:
        ids = await make_story(store, data_dir / "media")
        one = await store.repo.create_story("A single scene about a very long premise " * 3)
        from workflows_temporal.contracts import SaveNodeInput

        await store.repo.save_node(SaveNodeInput(
            workflow_id="wf-one", story_id=one.id, parent_node_id=None, direction="d",
            title="Only Scene", text="One.", summary="One.", model="llama3.2"))
        yield data_dir, ids
    finally:
        await store.close()


# ---- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_placeholders_not_python_types(tmp_path: Path, command: str) -> None:
    run = storyloom(tmp_path, *command.split(), "--help")

    assert run.returncode == 0, run.stderr
    for noise in ("<bool>", "<str>", "<int>", "<float>", "<path>", "<list", "{"):
        assert noise not in run.stdout, (noise, run.stdout)
    assert max(len(line) for line in run.stdout.splitlines()) <= 100


def test_every_option_says_what_it_does(tmp_path: Path) -> None:
    scene = storyloom(tmp_path, "scene", "--help").stdout
    line = next(ln for ln in scene.splitlines() if "--no-illustrate" in ln)
    assert "text only" in line.lower()
    assert "Usage: storyloom scene [OPTIONS] DIRECTION" in scene

    emulate = storyloom(tmp_path, "emulate", "--help").stdout
    port_help = " ".join(ln for ln in emulate.splitlines() if "--port" in ln)
    assert "Ollama emulator port" not in port_help and "Port of the emulator" in port_help


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    run = storyloom(tmp_path, "--version")

    assert run.returncode == 0
    assert re.fullmatch(r"storyloom \d+\.\d+\.\d+\S*\n", run.stdout), run.stdout


# ---- pipes -----------------------------------------------------------------------------------


def _into_closed_pipe(data_dir: Path, *args: str) -> tuple[int, str]:
    """Run with stdout a pipe whose reader is already gone (`| head -0`)."""
    proc = subprocess.Popen([*CLI, *args], env=_env(data_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(60), err


@pytest.mark.parametrize("args", [["list"], ["--help"], ["show", "STORY"], ["tree", "STORY"]])
async def test_a_reader_that_leaves_early_is_not_an_error(
    library: tuple[Path, StoryIds], args: list[str]
) -> None:
    data_dir, ids = library
    args = [ids.story if a == "STORY" else a for a in args]

    code, err = _into_closed_pipe(data_dir, *args)

    assert code == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Errno 32" not in err


async def test_piped_output_keeps_ids_and_paths_whole_at_any_width(
    library: tuple[Path, StoryIds],
) -> None:
    data_dir, ids = library
    for columns in ("40", "100"):
        show = storyloom(data_dir, "show", ids.root, COLUMNS=columns)
        tree = storyloom(data_dir, "show", ids.story, COLUMNS=columns)
        cast = storyloom(data_dir, "character", "list", ids.story, COLUMNS=columns)

        assert show.returncode == tree.returncode == cast.returncode == 0
        image = str(data_dir / "media" / f"{ids.root}.png")
        assert f"image done: {image}" in show.stdout.splitlines()
        for node in (ids.root, ids.hostile, ids.calm):
            assert any(node in line and "image" in line for line in tree.stdout.splitlines())
        assert any("old keeper, grey coat" in line and image in line
                   for line in cast.stdout.splitlines()), cast.stdout


async def test_counts_read_as_english(library: tuple[Path, StoryIds]) -> None:
    data_dir, _ = library
    run = storyloom(data_dir, "list")

    assert run.returncode == 0
    assert re.search(r"\b1 scene\b", run.stdout) and "1 scenes" not in run.stdout
    assert re.search(r"\b3 scenes\b", run.stdout)


# ---- links to the Temporal UI ----------------------------------------------------------------


@pytest.fixture
def fake_ui() -> Iterator[int]:
    """Something that answers like the Temporal UI's settings endpoint."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"Version":"2.54.1"}'
            self.send_response(200 if self.path == "/api/v1/settings" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_ui_of_an_unknown_story_is_bad_input(library: tuple[Path, StoryIds]) -> None:
    data_dir, _ = library
    run = storyloom(data_dir, "ui", "s_000000000000")

    assert run.returncode == 2
    assert run.stdout == "" and "storyloom list" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


async def test_ui_link_only_when_the_ui_answers(library: tuple[Path, StoryIds],
                                                fake_ui: int) -> None:
    data_dir, ids = library
    down = storyloom(data_dir, "ui", ids.story)
    up = storyloom(data_dir, "ui", ids.story, STORYLOOM_TEMPORAL_UI_PORT=str(fake_ui))

    assert down.returncode == 1 and down.stdout == ""
    assert "does not answer" in down.stderr and "storyloom up" in down.stderr
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith(f"http://127.0.0.1:{fake_ui}/namespaces/default/workflows?query=")
    assert ids.story in up.stdout


def test_a_crash_before_any_command_is_one_line_and_a_log(tmp_path: Path) -> None:
    crash = ("import starter.cli as cli\n"
             "def boom(**_):\n    raise RuntimeError('typer broke')\n"
             "cli.app = boom\ncli.main()\n")
    run = subprocess.run([sys.executable, "-c", crash], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=60, check=False)

    assert run.returncode == 1
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "the traceback is in the log" in run.stderr
    log = (tmp_path / "logs" / "cli.log").read_text()
    assert "Traceback" in log and "typer broke" in log


def _on_narrow_terminal(data_dir: Path, *args: str, columns: int = 40) -> tuple[int, str]:
    """Run with stdout on a pseudo-terminal ``columns`` wide; (exit code, what it showed)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = _env(data_dir, COLUMNS=str(columns))
    proc = subprocess.Popen([*CLI, *args], env=env, stdout=follower, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = proc.wait(60)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    return code, shown.replace("\r", "")


async def test_a_narrow_terminal_wraps_but_never_cuts(library: tuple[Path, StoryIds]) -> None:
    data_dir, ids = library
    image = str(data_dir / "media" / f"{ids.root}.png")
    for args in (["character", "list", ids.story], ["show", ids.story], ["show", ids.root]):
        code, shown = _on_narrow_terminal(data_dir, *args)

        assert code == 0, shown
        assert "…" not in shown, shown
        if args[0] == "character":  # the path whole, on a line of its own (never folded)
            assert image in [line.strip() for line in shown.splitlines()], shown
        else:
            assert ids.root in re.sub(r"\s", "", shown), shown
