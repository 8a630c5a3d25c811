"""``recovery``: kill -9 the worker mid-render; a new worker finishes the scene.

(time from the kill to the scene's result − render time still left at the kill) ÷ the render
step's heartbeat timeout. "Left" comes from the emulator's own job end time: ComfyUI keeps
rendering while no worker lives, and the new attempt re-attaches to the same prompt id.
"""

from __future__ import annotations

import asyncio
import time

from bench.lab import get_lab
from bench.report import Result, spread
from bench.scene_bench import _prompt_id
from workflows_temporal.policies import STEPS

__all__ = ["recovery"]

STEP_DELAY_S = 0.3  # 20 steps: a 6 s render


async def recovery(quick: bool) -> list[Result]:
    lab = await get_lab()
    heartbeat = STEPS["render"].heartbeat
    assert heartbeat is not None
    timeout_s = heartbeat.total_seconds()
    repeats = 1 if quick else 3
    ratios: list[float] = []
    rows: list[dict[str, float]] = []
    try:
        await lab.llm_faults()
        await lab.comfy_faults(step_delay=STEP_DELAY_S)
        for _ in range(repeats):
            handle = await lab.start_scene()
            prompt_id = _prompt_id(handle.id)
            deadline = time.monotonic() + 60
            while (await _status(lab, prompt_id)) != "in_progress":
                if time.monotonic() > deadline:
                    raise RuntimeError("the render never started")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # mid-render: a second into a 6 s job
            killed_wall, killed = time.time(), time.perf_counter()
            lab.kill_worker()
            await lab.start_worker()
            result = await handle.result()
            done = time.perf_counter()
            job = await lab.comfy_job(prompt_id)
            left = max(0.0, job["execution_end_time"] / 1e3 - killed_wall)
            stats = await lab.comfy_stats()
            assert result.image_status == "done", result
            assert stats["executed_by_prompt"].get(prompt_id) == 1, "the render ran twice"
            ratios.append((done - killed - left) / timeout_s)
            rows.append({"kill_to_done_s": round(done - killed, 3), "render_left_s": round(left, 3)})
    finally:
        await lab.comfy_faults()
    med, rel = spread(ratios)
    return [Result("recovery", med, 1.5, "lower", "x", median=med, spread=rel,
                   repeats=len(ratios),
                   detail={"heartbeat_timeout_s": timeout_s, "runs": rows,
                           "retry_initial_interval_s":
                               STEPS["render"].retry.initial_interval.total_seconds()})]


async def _status(lab: object, prompt_id: str) -> str:
    from bench.lab import Lab

    assert isinstance(lab, Lab)
    reply = await lab._http.get(f"{lab.comfy.url}/api/jobs/{prompt_id}")
    return str(reply.json().get("status", "")) if reply.status_code == 200 else ""
