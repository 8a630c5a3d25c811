"""``comfy_roundtrip``: time per ComfyUI job from submit to file on disk, over the emulator's
own execution time (its job's execution_end_time - execution_start_time).

The job runs through the real ``render`` activity logic (lease, status check, WebSocket, submit,
follow, HTTP confirm, outputs, download with sha256) in this process, without Temporal.
"""

from __future__ import annotations

import time
import uuid

from bench.inproc import InProcess
from bench.lab import get_lab
from bench.report import Result, spread
from workflows_temporal.contracts import RenderInput, RenderResult

__all__ = ["comfy_roundtrip"]

STEP_DELAY_S = 0.02  # 20 steps: 0.4 s of execution


async def comfy_roundtrip(quick: bool) -> list[Result]:
    lab = await get_lab()
    acts = await InProcess.open(lab.settings)
    repeats = 5 if quick else 15
    extra_ms: list[float] = []
    totals: list[float] = []
    try:
        await lab.comfy_faults(step_delay=STEP_DELAY_S)
        for i in range(repeats + 1):
            started = time.perf_counter()
            got: RenderResult = await acts.call("render", RenderInput(
                workflow_id=f"roundtrip-{uuid.uuid4()}", node_id="bench", template="scene",
                positive="a lighthouse at dusk, a red fox on the rocks", seed=i))
            total = time.perf_counter() - started
            job = await lab.comfy_job(got.prompt_id)
            executed = (job["execution_end_time"] - job["execution_start_time"]) / 1e3
            if i == 0:
                continue  # warm-up: first socket, template load, first lease row
            totals.append(total)
            extra_ms.append((total - executed) * 1e3)
    finally:
        await acts.aclose()
        await lab.comfy_faults()
    med, rel = spread(extra_ms)
    return [Result(
        "comfy_roundtrip", med, 150.0, "lower", "ms", median=med, spread=rel,
        repeats=len(extra_ms),
        detail={"extra_ms": [round(x, 1) for x in extra_ms], "total_s": totals,
                "emulator_steps": 20, "step_delay_s": STEP_DELAY_S},
    )]
