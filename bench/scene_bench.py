"""``overhead`` and ``vs_direct``: one illustrated scene through storyloom, against the
emulators' configured service time and against the same steps called directly.

Both rows come from one interleaved measurement (same emulators, database and delays):

* critical path = 3 LLM calls × ``prompt_delay`` (write_scene streams the scene, then asks for
  its summary; extract_cast) + 20 sampler steps × ``step_delay`` (render). free_llm_vram and
  the db steps have no configured delay. overhead = wall time ÷ critical path.
* vs_direct = wall time through storyloom ÷ wall time of ``bench.direct.direct_scene``.

Wall time through storyloom runs from ``start_workflow`` to the result in the client (the
worker is its own process, as ``storyloom worker`` runs it).
"""

from __future__ import annotations

import time
from typing import Any

from bench.direct import direct_scene
from bench.inproc import InProcess
from bench.lab import get_lab
from bench.report import Result, spread

__all__ = ["overhead", "vs_direct"]

LLM_CALLS = 3
PROMPT_DELAY_S = 0.85  # per LLM call: text ≈ 2 × 0.85 s (scene + summary), cast 0.85 s
STEPS = 20  # the scene template's KSampler steps
STEP_DELAY_S = 0.25  # render = 5 s
CRITICAL_S = LLM_CALLS * PROMPT_DELAY_S + STEPS * STEP_DELAY_S

_cache: dict[bool, dict[str, Any]] = {}


async def _measure(quick: bool) -> dict[str, Any]:
    if quick in _cache:
        return _cache[quick]
    lab = await get_lab()
    acts = await InProcess.open(lab.settings)
    repeats = 2 if quick else 4
    ours: list[float] = []
    direct: list[float] = []
    exec_s: list[float] = []
    try:
        await lab.llm_faults()
        await lab.comfy_faults(step_delay=0.0)
        await lab.run_scene()  # warm-up both paths (imports, connections, sticky cache)
        await direct_scene(acts, lab.request())
        await lab.llm_faults(prompt_delay=PROMPT_DELAY_S)
        await lab.comfy_faults(step_delay=STEP_DELAY_S)
        for i in range(repeats):
            for which in (("ours", "direct") if i % 2 == 0 else ("direct", "ours")):
                started = time.perf_counter()
                if which == "ours":
                    result = await lab.run_scene()
                    ours.append(time.perf_counter() - started)
                    assert result.image_status == "done", result
                    job = await lab.comfy_job(_prompt_id(result.workflow_id))
                    exec_s.append((job["execution_end_time"] - job["execution_start_time"]) / 1e3)
                else:
                    await direct_scene(acts, lab.request())
                    direct.append(time.perf_counter() - started)
    finally:
        await acts.aclose()
        await lab.llm_faults()
        await lab.comfy_faults()
    _cache[quick] = {"ours": ours, "direct": direct, "exec": exec_s}
    return _cache[quick]


def _prompt_id(workflow_id: str) -> str:
    from activities.comfyui.activities import render_prompt_id

    return render_prompt_id(workflow_id, "render")


async def overhead(quick: bool) -> list[Result]:
    m = await _measure(quick)
    ratios = [t / CRITICAL_S for t in m["ours"]]
    med, rel = spread(ratios)
    return [Result(
        "overhead", med, 1.05, "lower", "x", median=med, spread=rel, repeats=len(ratios),
        detail={"wall_s": m["ours"], "critical_path_s": CRITICAL_S,
                "formula": f"{LLM_CALLS} LLM calls x {PROMPT_DELAY_S} s + {STEPS} steps x "
                           f"{STEP_DELAY_S} s",
                "render_exec_s_by_emulator": m["exec"], "server": "dev server, file-backed"},
    )]


async def vs_direct(quick: bool) -> list[Result]:
    m = await _measure(quick)
    ratios = [a / b for a, b in zip(m["ours"], m["direct"], strict=True)]
    med, rel = spread(ratios)
    return [Result(
        "vs_direct", med, 1.05, "lower", "x", median=med, spread=rel, repeats=len(ratios),
        detail={"storyloom_s": m["ours"], "direct_s": m["direct"],
                "direct_over_critical": [d / CRITICAL_S for d in m["direct"]]},
    )]
