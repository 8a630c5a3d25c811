"""Every benchmark by name: ``async def run(quick: bool) -> list[Result]``.

``pipeline`` belongs to the stories work (bench/pipeline.py); until that module exists its entry
returns no row and says why on stderr.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Awaitable, Callable

from bench.comfy_bench import comfy_roundtrip
from bench.fleet import fleet
from bench.memory import memory
from bench.recovery import recovery
from bench.report import Result
from bench.scene_bench import overhead, vs_direct
from bench.stream import stream
from bench.throughput import throughput

__all__ = ["BENCHMARKS", "Benchmark"]

Benchmark = Callable[[bool], Awaitable[list[Result]]]


async def _pipeline(quick: bool) -> list[Result]:
    if importlib.util.find_spec("bench.pipeline") is None:
        print("   pipeline: skipped, bench/pipeline.py does not exist yet", file=sys.stderr)
        return []
    pipeline = importlib.import_module("bench.pipeline")
    rows: list[Result] = await pipeline.run(quick)
    return rows


BENCHMARKS: dict[str, Benchmark] = {
    "overhead": overhead,
    "vs_direct": vs_direct,
    "throughput": throughput,
    "stream": stream,
    "comfy_roundtrip": comfy_roundtrip,
    "recovery": recovery,
    "pipeline": _pipeline,
    "memory": memory,
    "fleet": fleet,
}
