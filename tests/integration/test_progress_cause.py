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

from tests.fixtures.processes import CLI, Services, start_services, stop

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def stack(tmp_path: Path) -> AsyncIterator[Services]:
    services = await start_services(tmp_path)
    try:
        yield services
    finally:
        await services.close()


async def test_progress_of_a_retried_step_shows_why(stack: Services) -> None:
    # Ollama is gone: write_scene fails to connect and is retried. A connection failure carries
    # httpx's whole chain of causes, which made it larger than the server keeps (4 KiB).
    stack.kill("ollama")
    scene = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [*CLI, "scene", "A fox in the rain", "--no-illustrate"], env=stack.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert scene.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while (left := deadline - time.monotonic()) > 0:
            try:  # the thread ends when the scene's stderr closes (stop() in finally)
                line = await asyncio.wait_for(asyncio.to_thread(scene.stderr.readline), left)
            except TimeoutError:
                break
            if not line:
                break
            lines.append(line.rstrip())
            if "last failure:" in line:
                break
        retrying = [ln for ln in lines if "last failure:" in ln]
        assert retrying, "\n".join(lines)
        assert "Failure exceeds size limit" not in retrying[-1]
        assert "write" in retrying[-1], retrying[-1]
        assert "cannot connect" in retrying[-1] and stack.ollama_url in retrying[-1], \
            retrying[-1]
    finally:
        started = next((m.group(1) for ln in lines
                        if (m := re.search(r"scene (scene-[0-9a-f-]+) started", ln))), None)
        if started:
            await stack.storyloom("cancel", started)
        stop(scene)
