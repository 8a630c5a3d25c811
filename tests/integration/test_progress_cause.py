"""While a step is retried, the progress line names its real cause, never the server's
"Failure exceeds size limit." stand-in (a failure over 4 KiB is replaced by the server)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fixtures.common import free_port
from tests.fixtures.processes import CLI, Services, spawn, start_services, stop

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path) -> AsyncIterator[Services]:
    services = await start_services(tmp_path)
    try:
        yield services
    finally:
        await services.close()


async def test_progress_of_a_retried_render_shows_why(stack: Services) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # An image worker for GPU "dead" whose ComfyUI is unreachable: its renders fail and retry.
    worker = spawn(["worker", "--role", "image", "--gpu", "dead"],
                   {**stack.env, "STORYLOOM_COMFYUI_URL": dead}, stack.log_of("dead-worker"))
    scene = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [*CLI, "scene", "A fox in the rain"],
                             env={**stack.env, "STORYLOOM_GPU": "dead"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert scene.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(scene.stderr.readline)
            if not line:
                break
            lines.append(line.rstrip())
            if "render" in line and "last failure:" in line:
                break
        retrying = [ln for ln in lines if "render" in ln and "last failure:" in ln]
        assert retrying, "\n".join(lines)
        assert "Failure exceeds size limit" not in retrying[-1]
        assert "cannot reach ComfyUI" in retrying[-1] and dead in retrying[-1], retrying[-1]
    finally:
        started = next((m.group(1) for ln in lines
                        if (m := re.search(r"scene (scene-[0-9a-f-]+) started", ln))), None)
        if started:
            await stack.storyloom("cancel", started)
        stop(scene)
        stop(worker)
