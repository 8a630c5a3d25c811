"""``throughput``: scenes per second with zero-delay emulators and one worker, and the
activities per second this gives ÷ those of a no-op workflow with as many activities.

Both bursts start N workflows at once on the same dev server and time the first start to the
last result; the no-op worker (``bench.noop``) is a subprocess like ``storyloom worker``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.lab import Lab, get_lab
from bench.noop import STEPS
from bench.report import Result, spread

__all__ = ["throughput"]


async def _burst(n: int, start: Callable[[], Awaitable[Any]]) -> float:
    """Seconds from the first start to the last result of ``n`` concurrent workflows."""
    began = time.perf_counter()
    handles = await asyncio.gather(*(start() for _ in range(n)))
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - began


async def _noop_worker(lab: Lab, queue: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.noop", lab.server.address, queue],  # noqa: ASYNC220
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    if "ready" not in line:
        proc.kill()
        raise RuntimeError(f"noop worker did not start (exit {proc.poll()})")
    return proc


async def throughput(quick: bool) -> list[Result]:
    lab = await get_lab()
    n = 6 if quick else 20
    repeats = 2
    queue = f"bench-noop-{uuid.uuid4().hex[:8]}"
    noop = await _noop_worker(lab, queue)

    def start_noop() -> Awaitable[Any]:
        return lab.client.start_workflow("BenchNoopScene", id=f"noop-{uuid.uuid4()}",
                                         task_queue=queue)

    scene_s: list[float] = []
    noop_s: list[float] = []
    cpu: dict[str, float] = {}
    try:
        await lab.llm_faults()
        await lab.comfy_faults(step_delay=0.0)
        await _burst(2, lab.start_scene)  # warm-up
        await _burst(2, start_noop)
        for _ in range(repeats):
            before = lab.cpu()
            scene_s.append(await _burst(n, lab.start_scene))
            for role, used in lab.cpu().items():
                cpu[role] = cpu.get(role, 0.0) + used - before.get(role, used)
            noop_s.append(await _burst(n, start_noop))
    finally:
        noop.kill()
        noop.wait(5)
        await lab.comfy_faults()
    ratios = [b / a for a, b in zip(scene_s, noop_s, strict=True)]  # same activity count
    med, rel = spread(ratios)
    scenes_per_s = [n / s for s in scene_s]
    sps, sps_rel = spread(scenes_per_s)
    return [
        Result("throughput", med, 0.6, "higher", "x", median=med, spread=rel, repeats=len(ratios),
               detail={"scenes": n, "activities_per_scene": STEPS,
                       "scene_activities_per_s": [n * STEPS / s for s in scene_s],
                       "noop_activities_per_s": [n * STEPS / s for s in noop_s],
                       "cpu_share_during_scene_bursts": {
                           role: round(used / sum(scene_s), 2) for role, used in cpu.items()}}),
        Result("throughput.scenes_per_s", sps, None, "higher", "/s", median=sps, spread=sps_rel,
               repeats=len(scene_s), detail={"burst": n, "seconds": scene_s}),
    ]
