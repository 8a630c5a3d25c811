"""The first ten minutes (issue 12) on the real stack: a dev server, both emulators and a worker
as processes, driven through the CLI. What a user sees: exit codes, the sentence on the screen,
the rows in the store, and the workflows left in Temporal.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowExecutionStatus

from tests.fixtures.processes import CLI, Services, start_services
from workflows_temporal.contracts import SceneResult

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SLOW_WRITING = {"token_delay": 10.0, "response_tokens": 50}  # ~10 s per scene at scale 0.02


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    services = await start_services(tmp_path_factory.mktemp("first-minutes"))
    try:
        yield services
    finally:
        await services.close()


def rows(db_file: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(db_file) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args).fetchall()]


async def workflow_count(stack: Services) -> int:
    return len([w async for w in stack.client.list_workflows()])


async def run(stack: Services, *args: str, env: dict[str, str] | None = None,
              drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    full = {**stack.env, **(env or {})}
    for name in drop:
        full.pop(name, None)
    return await asyncio.to_thread(subprocess.run, [*CLI, *args], env=full, capture_output=True,
                                   text=True, timeout=120, check=False)


async def scene(stack: Services, *args: str) -> SceneResult:
    done = await run(stack, "scene", *args, "--no-illustrate", "--json")
    assert done.returncode == 0, done.stderr
    return SceneResult.model_validate_json(done.stdout)


async def test_scene_with_story_continues_after_its_latest_scene(stack: Services) -> None:
    first = await scene(stack, "A lighthouse keeper finds a fox")
    go_on = await run(stack, "scene", "The fox speaks", "--story", first.story_id,
                      "--no-illustrate", "--json")

    assert go_on.returncode == 0, go_on.stderr
    second = SceneResult.model_validate_json(go_on.stdout)
    assert f"continuing story {first.story_id} after scene 1" in go_on.stderr
    assert first.node_id in go_on.stderr
    [row] = rows(stack.db_file, "SELECT parent_id, depth FROM nodes WHERE id = ?",
                 second.node_id)
    assert (row["parent_id"], row["depth"]) == (first.node_id, 1)

    await scene(stack, "What if the fox had stayed silent", "--parent", first.node_id)
    nodes_before, workflows_before = len(rows(stack.db_file, "SELECT id FROM nodes")), \
        await workflow_count(stack)
    ambiguous = await run(stack, "scene", "And then?", "--story", first.story_id)

    assert ambiguous.returncode == 2, ambiguous.stderr
    assert "2 branch tips" in ambiguous.stderr and "--parent" in ambiguous.stderr
    assert len(ambiguous.stderr.strip().splitlines()) == 1
    assert len(rows(stack.db_file, "SELECT id FROM nodes")) == nodes_before
    assert await workflow_count(stack) == workflows_before


async def test_mistakes_leave_no_workflow_and_no_story(stack: Services) -> None:
    stories, workflows = len(rows(stack.db_file, "SELECT id FROM stories")), \
        await workflow_count(stack)
    for args in (["scene", "A fox", "--story", "s_nope"],
                 ["scene", "A fox", "--parent", "n_nope"],
                 ["scene", "A fox", "--model", "nope"],
                 ["scene", "A fox", "--template", "nope"],
                 ["story", "pause"],
                 ["story", "x" * 5000]):
        refused = await run(stack, *args)
        assert refused.returncode == 2, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert len(rows(stack.db_file, "SELECT id FROM stories")) == stories
    assert await workflow_count(stack) == workflows


async def test_a_second_terminal_reads_the_running_store(stack: Services,
                                                         tmp_path: Path) -> None:
    made = await scene(stack, "A keeper counts the ships")
    # A new terminal: no STORYLOOM_DATA_DIR, and a home of its own (never the real one).
    fresh = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    listed = await run(stack, "show", made.story_id, env=fresh, drop=("STORYLOOM_DATA_DIR",))

    assert listed.returncode == 0, listed.stderr
    assert made.node_id in listed.stdout

    other = {"STORYLOOM_DATA_DIR": str(tmp_path / "elsewhere")}
    refused = await run(stack, "scene", "A fox", env=other)
    assert refused.returncode == 2, refused.stderr
    assert f"export STORYLOOM_DATA_DIR='{stack.data_dir}'" in refused.stderr
    warned = await run(stack, "list", env=other)
    assert warned.returncode == 0 and f"STORYLOOM_DATA_DIR='{stack.data_dir}'" in warned.stderr
    for home in ("home", "xdg"):  # the fresh terminal neither read nor created another store
        assert not any((tmp_path / home).rglob("*.db"))


async def test_cancel_says_how_the_run_ended(stack: Services) -> None:
    done = await scene(stack, "A quiet night at the lighthouse")
    again = await run(stack, "cancel", done.workflow_id)
    assert again.returncode == 2 and "already ended (completed)" in again.stderr, again.stderr

    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    try:
        started = await run(stack, "scene", "A storm rolls in", "--detach")
        workflow_id = started.stdout.strip().splitlines()[-1]
        cancelled = await run(stack, "cancel", workflow_id)
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"The scene {workflow_id} is cancelled." in cancelled.stdout
    described = await stack.client.get_workflow_handle(workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.CANCELED


def _spawn(stack: Services, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.Popen[str]:
    """`storyloom ARGS` in the background, its output piped, as a terminal user starts it."""
    return subprocess.Popen([*CLI, *args], env={**stack.env, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def _stderr_until(proc: subprocess.Popen[str], pattern: str, timeout: float) -> str:
    """Lines of ``proc``'s stderr up to the first that matches ``pattern``."""
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline),
                                      deadline - time.monotonic())
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


async def _end(stack: Services, proc: subprocess.Popen[str], workflow_id: str) -> None:
    """Nothing left running: the process gone, the workflow cancelled."""
    if proc.poll() is None:
        proc.kill()
    await asyncio.to_thread(proc.wait, 10)
    await run(stack, "cancel", workflow_id)


async def test_ctrl_c_says_the_scene_goes_on_and_how_to_follow_or_stop_it(
    stack: Services,
) -> None:
    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    proc = _spawn(stack, "scene", "A ship's bell rings at midnight", "--no-illustrate")
    workflow_id = ""
    try:
        head = await _stderr_until(proc, r"scene (scene-\S+) started", 60)
        workflow_id = re.search(r"scene (scene-\S+) started", head).group(1)  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)

        assert proc.returncode == 130
        assert f"storyloom watch {workflow_id}" in stderr, stderr
        assert f"storyloom cancel {workflow_id}" in stderr, stderr
        described = await stack.client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING  # it did go on
    finally:
        await stack.emulator_post(stack.ollama_url, {})
        if workflow_id:
            await _end(stack, proc, workflow_id)


async def test_no_worker_polling_is_said_within_seconds_and_by_doctor(stack: Services) -> None:
    unpolled = {"STORYLOOM_GPU": "nobody-has-this-gpu"}
    proc = _spawn(stack, "scene", "A lamp nobody lights", env=unpolled)
    workflow_id = ""
    try:
        head = await _stderr_until(proc, r"scene (scene-\S+) started", 60)
        workflow_id = re.search(r"scene (scene-\S+) started", head).group(1)  # type: ignore[union-attr]
        said = await _stderr_until(proc, "No worker is polling", 30)
        assert "storyloom-image-nobody-has-this-gpu" in said and "storyloom worker" in said
    finally:
        if workflow_id:
            await _end(stack, proc, workflow_id)
        elif proc.poll() is None:
            proc.kill()
            proc.wait(10)

    doctor = await run(stack, "doctor", env=unpolled)
    assert doctor.returncode == 1, doctor.stdout
    lines = doctor.stdout.splitlines()
    assert any(ln.startswith("FAIL worker") and "storyloom-image-nobody-has-this-gpu" in ln
               for ln in lines), doctor.stdout
    assert any(ln.startswith("ok   worker") and "storyloom-llm" in ln for ln in lines)
    assert "storyloom worker --role image" in doctor.stdout
    healthy = await run(stack, "doctor")
    assert not any(ln.startswith("FAIL worker") for ln in healthy.stdout.splitlines()), \
        healthy.stdout



async def test_story_verbs_pause_unpause_cancel_say_what_happened(stack: Services) -> None:
    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    try:
        started = await run(stack, "story", "A keeper and a fox", "--scenes", "3",
                            "--no-illustrate", "--detach")
        assert started.returncode == 0, started.stderr
        workflow_id = started.stdout.strip().splitlines()[-1]
        paused = await run(stack, "story", "pause", workflow_id)
        unpaused = await run(stack, "story", "unpause", workflow_id)
        cancelled = await run(stack, "story", "cancel", workflow_id)
    finally:
        await stack.emulator_post(stack.ollama_url, {})

    assert paused.returncode == 0 and "holds before its next scene" in paused.stdout, paused
    assert unpaused.returncode == 0 and "goes on" in unpaused.stdout, unpaused
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"The story {workflow_id} is cancelled." in cancelled.stdout
    described = await stack.client.get_workflow_handle(workflow_id).describe()
    assert described.status == WorkflowExecutionStatus.CANCELED
    again = await run(stack, "story", "pause", workflow_id)
    assert again.returncode == 2 and "already ended (canceled)" in again.stderr, again.stderr


async def test_story_continue_goes_on_after_the_latest_scene(stack: Services) -> None:
    first = await scene(stack, "A lighthouse in the fog")
    more = await run(stack, "story", "--continue", first.story_id, "--scenes", "2",
                     "--no-illustrate", "--json")

    assert more.returncode == 0, more.stderr
    assert f"after scene 1 “{first.title}”" in more.stderr
    added = [SceneResult.model_validate(n) for n in json.loads(more.stdout)["nodes"]]
    chain = [first.node_id, *(s.node_id for s in added)]
    parents = {r["id"]: r["parent_id"] for r in rows(
        stack.db_file, "SELECT id, parent_id FROM nodes WHERE story_id = ?", first.story_id)}
    assert [parents[n] for n in chain] == [None, *chain[:-1]]


async def test_ctrl_c_on_a_story_then_watch_follows_it_to_the_end(stack: Services) -> None:
    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    proc = _spawn(stack, "story", "A fox keeps the light", "--scenes", "2", "--no-illustrate")
    workflow_id = ""
    try:
        head = await _stderr_until(proc, r"story (story-\S+) started", 60)
        workflow_id = re.search(r"story (story-\S+) started", head).group(1)  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 130
        assert f"storyloom watch {workflow_id}" in stderr, stderr
        assert f"storyloom story cancel {workflow_id}" in stderr, stderr
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    watched = await run(stack, "watch", workflow_id)
    assert watched.returncode == 0, watched.stderr
    assert "2 scenes" in watched.stdout, watched.stdout


async def test_ctrl_c_on_retry_image_says_it_goes_on(stack: Services) -> None:
    await stack.emulator_post(stack.comfy_url, {"error_at_node": "KSampler"})
    try:
        failed = await run(stack, "scene", "A lamp that will not draw", "--json")
    finally:
        await stack.emulator_post(stack.comfy_url, {})
    node_id = SceneResult.model_validate_json(failed.stdout).node_id
    await stack.emulator_post(stack.comfy_url, {"step_delay": 50.0})  # ~1 s per sampler step
    proc = _spawn(stack, "retry-image", node_id)
    workflow_id = ""
    try:
        head = await _stderr_until(proc, r"retry (\S+) started", 60)
        workflow_id = re.search(r"retry (\S+) started", head).group(1)  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 130
        assert f"storyloom watch {workflow_id}" in stderr, stderr
        assert f"storyloom cancel {workflow_id}" in stderr, stderr
    finally:
        await stack.emulator_post(stack.comfy_url, {})
        if workflow_id:
            await _end(stack, proc, workflow_id)


async def test_a_running_story_is_not_continued_a_second_time(stack: Services) -> None:
    from activities.store.ids import story_id_for
    from workflows_temporal.story import scene_workflow_id

    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    workflow_id = ""
    try:
        started = await run(stack, "story", "A keeper rows to the rock", "--scenes", "20",
                            "--no-illustrate", "--detach")
        assert started.returncode == 0, started.stderr
        workflow_id = started.stdout.strip().splitlines()[-1]
        story_id = story_id_for(scene_workflow_id(workflow_id, 0))
        deadline = time.monotonic() + 60
        while not rows(stack.db_file, "SELECT id FROM stories WHERE id = ?", story_id):
            assert time.monotonic() < deadline, "the story never reached the store"
            await asyncio.sleep(0.2)
        workflows = await workflow_count(stack)
        again = await run(stack, "story", "--continue", story_id, "--scenes", "1",
                          "--no-illustrate")
        scene_too = await run(stack, "scene", "The fox follows", "--story", story_id,
                              "--no-illustrate")

        for refused in (again, scene_too):
            assert refused.returncode == 2, refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert (f"story {story_id} is still running (workflow {workflow_id}): pause it"
                    in refused.stderr), refused.stderr
        assert await workflow_count(stack) == workflows
    finally:
        await stack.emulator_post(stack.ollama_url, {})
        if workflow_id:
            await run(stack, "story", "cancel", workflow_id)


async def test_story_verbs_name_the_real_story_and_commands(stack: Services) -> None:
    from activities.store.ids import story_id_for
    from workflows_temporal.story import scene_workflow_id

    unknown = await run(stack, "story", "pause", "s_nope")
    assert unknown.returncode == 2, unknown.stderr
    [line] = unknown.stderr.strip().splitlines()
    assert line.startswith("There is no story 's_nope' in ") and "--continue" not in line, line
    modelled = await run(stack, "story", "A fox", "--model", "nope", "--no-illustrate")
    assert modelled.returncode == 2 and "'nope'" in modelled.stderr, modelled.stderr

    await stack.emulator_post(stack.ollama_url, SLOW_WRITING)
    try:
        started = await run(stack, "story", "A keeper waits", "--scenes", "3",
                            "--no-illustrate", "--detach")
        workflow_id = started.stdout.strip().splitlines()[-1]
        cancelled = await run(stack, "story", "cancel", workflow_id)
        assert cancelled.returncode == 0, cancelled.stderr
    finally:
        await stack.emulator_post(stack.ollama_url, {})
    watched = await run(stack, "watch", workflow_id)

    assert watched.returncode == 1, watched.stderr
    story_id = story_id_for(scene_workflow_id(workflow_id, 0))
    assert f"`storyloom story --continue {story_id} --scenes N`" in watched.stderr, \
        watched.stderr
