"""``fleet``: K stories × S scenes started together on G emulated GPUs, ``shared`` and
``separate``, with fixed service and load times (issue 13, "Many stories, few GPUs").

Service times (emulator faults, wall seconds): each LLM call ``LLM_CALL_S`` (a scene makes three:
write, summary, cast), a model load ``LLM_LOAD_S``; a render is 20 sampler steps ×
``STEP_S``, and a cold checkpoint costs ``CKPT_LOAD_S``. ``shared``: the Ollama emulator lives
on GPU 0 (a render beside a resident model fails with CUDA out of memory); ``separate``: the
LLM has its own machine and the G GPUs only render.

**Lower bound.** Let W_llm be the LLM's service time and W_img the renders' service time (K·S
× the mean time of a render that succeeded; both measured by the emulators in the same run,
without loads, so a slow machine raises the bound as much as the makespan), L_llm and L_ckpt the fixed load times. The fewest model switches that can
serve every scene: one LLM load (all texts can be written before any render, since no text
depends on a picture) and one checkpoint load per GPU. One Ollama serves one request at a time,
so the LLM's own work is a bound, and the GPUs can at best share the GPU work evenly:

    shared:   bound = max(W_llm + L_llm, (W_llm + L_llm + W_img + G·L_ckpt) / G)
    separate: bound = max(W_llm + L_llm, (W_img + G·L_ckpt) / G)

Rows per mode and G: makespan ÷ bound; GPU busy fraction (Σ the cards' busy seconds ÷ (G ×
makespan); in ``shared`` GPU 0's busy time counts LLM and renders once); model switches (LLM
loads on a GPU + checkpoint loads); out-of-memory errors; p50/p95 of the scenes' latency (the
scene workflow's start to end); scenes per minute, counting only scenes whose picture was made
(a scene whose render ran out of memory is finished but not served); and G = 2 ÷ G = 1 in those.
While renders fail the makespan can fall below the bound: the bound counts every scene's render.
Then the peak RSS of every worker with ``MEMORY_STORIES`` stories in flight.
Not part of ``--quick``: one configuration alone starts a dev server and five processes.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

from bench.fleet_rig import Rig, has_scheduler, start_rig
from bench.lab import rss_mb
from bench.report import Result
from workflows_temporal.contracts import GpuSharing, ImageStatus, StoryRequest, StoryResult
from workflows_temporal.policies import SCENE_WORKFLOW_QUEUE

__all__ = ["fleet", "lower_bound"]

STORIES, SCENES = 8, 3
LLM_CALL_S, LLM_LOAD_S = 0.1, 1.0
STEPS, STEP_S, CKPT_LOAD_S = 20, 0.05, 1.0
MEMORY_STORIES = 50
DEADLINE_S = 240.0  # a configuration takes under a minute; past this it is reported as stalled


class Stalled(Exception):
    """Not every story finished within DEADLINE_S (``done`` of them did)."""

    def __init__(self, done: int) -> None:
        super().__init__(f"{done} stories finished within {DEADLINE_S:.0f} s")
        self.done = done


def lower_bound(*, shared: bool, gpus: int, w_llm: float, w_img: float) -> float:
    """The bound of the module docstring, in seconds."""
    llm = w_llm + LLM_LOAD_S
    gpu_work = w_img + gpus * CKPT_LOAD_S + (llm if shared else 0.0)
    return max(llm, gpu_work / gpus)


async def _stories(rig: Rig, stories: int, scenes: int, sharing: GpuSharing,
                   ) -> tuple[float, list[StoryResult]]:
    """Start ``stories`` StoryWorkflows at once; (seconds to the last result, results)."""
    tag = uuid.uuid4().hex[:6]
    rig.burst_began = time.time()
    began = time.perf_counter()
    handles = await asyncio.gather(*(
        rig.client.start_workflow(
            "StoryWorkflow",
            StoryRequest(directions=[f"Story {k} ({tag}), scene {s + 1}: a lighthouse keeper "
                                     "and a talking fox" for s in range(scenes)],
                         model="llama3.2", template="scene", gpu_sharing=sharing),
            id=f"fleet-{tag}-{k}", task_queue=SCENE_WORKFLOW_QUEUE, result_type=StoryResult)
        for k in range(stories)))
    waits = [asyncio.ensure_future(h.result()) for h in handles]
    done, pending = await asyncio.wait(waits, timeout=DEADLINE_S)
    for task in pending:
        task.cancel()
    if pending:
        raise Stalled(sum(1 for t in done if t.exception() is None))
    return time.perf_counter() - began, [t.result() for t in waits]


def _timeline(spans: list[list[tuple[float, float]]], began: float, ended: float,
              ) -> list[dict[str, float]]:
    """Where each GPU's renders left it idle: before the first (ramp), between renders (gaps,
    which include LLM turns on a shared card), after the last (tail); seconds."""
    out = []
    for gpu in spans:
        if not gpu:
            out.append({"renders": 0, "ramp_s": round(ended - began, 3)})
            continue
        busy = sum(end - start for start, end in gpu)
        out.append({"renders": len(gpu), "ramp_s": round(gpu[0][0] - began, 3),
                    "gaps_s": round(gpu[-1][1] - gpu[0][0] - busy, 3),
                    "tail_s": round(ended - gpu[-1][1], 3), "render_s": round(busy, 3)})
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _configuration(gpus: int, sharing: GpuSharing) -> dict[str, Any]:
    shared = sharing == GpuSharing.SHARED
    rig = await start_rig(gpus, shared=shared)
    completed = False
    try:
        await rig.set_faults({"prompt_delay": LLM_CALL_S, "load_delay": LLM_LOAD_S},
                             {"step_delay": STEP_S, "checkpoint_load_delay": CKPT_LOAD_S})
        before = await rig.stats()
        try:
            makespan, results = await _stories(rig, STORIES, SCENES, sharing)
        except Stalled as exc:
            after = await rig.stats()
            return {"stalled": True, "stories_done": exc.done, "emulators": after,
                    "scheduler": await rig.scheduler_stats()}
        timeline = _timeline(await rig.render_spans(), rig.burst_began, time.time())
        after = await rig.stats()
        scheduler = await rig.scheduler_stats()
        completed = True
    finally:
        await rig.close(keep_files=not completed)
    llm0, llm1 = before["ollama"], after["ollama"]
    w_llm = (llm1["busy_s"] - llm0["busy_s"]) - (llm1["load_s"] - llm0["load_s"])
    comfy = list(zip(before["comfy"], after["comfy"], strict=True))
    done = sum(b["completed"] - a["completed"] for a, b in comfy)
    done_s = sum(b["completed_s"] - a["completed_s"] for a, b in comfy)
    w_img = STORIES * SCENES * (done_s / done if done else STEPS * STEP_S)  # every scene's render
    busy = sum(b["gpu"]["busy_s"] - a["gpu"]["busy_s"] for a, b in comfy)
    llm_loads = llm1["loads"] - llm0["loads"]
    ckpt_loads = sum(b["checkpoint_loads"] - a["checkpoint_loads"] for a, b in comfy)
    runs: dict[str, int] = {}
    for _, b in comfy:
        for pid, n in b["executed_by_prompt"].items():
            runs[pid] = runs.get(pid, 0) + n
    latencies = [s.timings.total_s for r in results for s in r.scenes]
    illustrated = sum(1 for r in results for s in r.scenes if s.image_status == ImageStatus.DONE)
    bound = lower_bound(shared=shared, gpus=gpus, w_llm=w_llm, w_img=w_img)
    return {
        "makespan_s": round(makespan, 3), "bound_s": round(bound, 3),
        "w_llm_s": round(w_llm, 3), "w_img_s": round(w_img, 3),
        "busy": busy / (gpus * makespan),
        "switches": (llm_loads if shared else 0) + ckpt_loads,
        "llm_loads": llm_loads, "checkpoint_loads": ckpt_loads,
        "oom_errors": sum(b["oom_errors"] - a["oom_errors"] for a, b in comfy),
        "vram_conflicts": llm1["vram_conflicts"] - llm0["vram_conflicts"],
        "llm_loads_beside_checkpoint": (llm1.get("loads_beside_checkpoint", 0)
                                        - llm0.get("loads_beside_checkpoint", 0)),
        "duplicate_gpu_jobs": sum(1 for n in runs.values() if n > 1),
        "scenes": len(latencies), "images_failed": sum(r.images_failed for r in results),
        "p50_s": statistics.median(latencies), "p95_s": _pct(latencies, 0.95),
        "scenes_per_min": 60.0 * illustrated / makespan, "illustrated": illustrated,
        "gpu_timeline": timeline, "scheduler": scheduler,
    }


def _rows(mode: str, gpus: int, m: dict[str, Any]) -> list[Result]:
    name = f"fleet {mode} g{gpus}"
    if m.get("stalled"):
        return [Result(f"{name} stories done", m["stories_done"], STORIES, "higher",
                       detail={k: v for k, v in m.items() if k != "emulators"}
                       | {"comfy": [{k: c[k] for k in ("completed", "failed", "oom_errors")}
                                    for c in m["emulators"]["comfy"]]})]
    target = mode == "shared" and gpus == 1  # the targets are for one shared GPU
    detail = {k: v for k, v in m.items() if k not in ("busy", "p50_s", "p95_s")}
    return [
        Result(f"{name} makespan/bound", m["makespan_s"] / m["bound_s"], 1.2 if target else None,
               "lower", "x", detail=detail),
        Result(f"{name} busy", m["busy"], 0.85 if target else None, "higher"),
        Result(f"{name} switches", m["switches"], None, "lower",
               detail={"scenes": m["scenes"], "llm_loads": m["llm_loads"],
                       "checkpoint_loads": m["checkpoint_loads"]}),
        Result(f"{name} OOM errors", m["oom_errors"], 0.0, "lower",
               detail={"images_failed": m["images_failed"], "vram_conflicts": m["vram_conflicts"],
                       "llm_loads_beside_checkpoint": m["llm_loads_beside_checkpoint"],
                       "duplicate_gpu_jobs": m["duplicate_gpu_jobs"]}),
        Result(f"{name} scene p50", m["p50_s"], None, "lower", "s"),
        Result(f"{name} scene p95", m["p95_s"], None, "lower", "s"),
        Result(f"{name} scenes/min", m["scenes_per_min"], None, "higher",
               detail={"illustrated": m["illustrated"], "scenes": m["scenes"]}),
    ]


async def _memory() -> Result:
    """Peak RSS of each worker with MEMORY_STORIES one-scene stories in flight (fast delays)."""
    rig = await start_rig(2, shared=False)
    stalled: int | None = None
    try:
        await rig.set_faults({"prompt_delay": 0.01}, {"step_delay": 0.002})
        try:
            await _stories(rig, MEMORY_STORIES, 1, GpuSharing.SEPARATE)
        except Stalled as exc:  # still 50 stories in flight: the peak is still measured
            stalled = exc.done
        peaks = {name: rss_mb(pid)[1] for name, pid in rig.worker_pids().items()}
    finally:
        await rig.close(keep_files=stalled is not None)
    worst = max(peaks, key=lambda n: peaks[n])
    return Result("fleet worker peak RSS, 50 stories", peaks[worst], 250.0, "lower", "MB",
                  detail={"peak_mb_by_worker": peaks, "stories_in_flight": MEMORY_STORIES,
                          "stalled_with_stories_done": stalled})


async def fleet(quick: bool) -> list[Result]:
    if quick:
        print("   fleet: not part of --quick (run `python -m bench --only fleet`)",
              file=sys.stderr)
        return []
    print(f"   fleet: scheduler {'present' if has_scheduler() else 'absent'}; "
          f"{STORIES} stories x {SCENES} scenes", file=sys.stderr)
    rows: list[Result] = []
    for sharing in (GpuSharing.SHARED, GpuSharing.SEPARATE):
        per_g = {}
        for gpus in (1, 2):
            per_g[gpus] = await _configuration(gpus, sharing)
            print(f"   fleet {sharing.value} g{gpus}: {per_g[gpus]}", file=sys.stderr, flush=True)
            rows += _rows(sharing.value, gpus, per_g[gpus])
        if not (per_g[1].get("stalled") or per_g[2].get("stalled")):
            ratio = per_g[2]["scenes_per_min"] / per_g[1]["scenes_per_min"]
            rows.append(Result(f"fleet {sharing.value} g2/g1 scenes/min", ratio, 1.8, "higher",
                               "x"))
    rows.append(await _memory())
    return rows
