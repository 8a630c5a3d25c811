"""``memory``: the worker's peak RSS idle and with 50 scenes in flight (a fresh worker process,
VmHWM from /proc), and the Python heap our OllamaClient needs while streaming 10 MB
(tracemalloc peak: flat means it does not grow with the stream).
"""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path

from activities.ollama.client import OllamaClient
from bench.lab import MODEL, get_lab, rss_mb
from bench.report import Result
from bench.stream import record_stream, replay_server, show_path

__all__ = ["memory"]

IN_FLIGHT = 50  # quick runs use QUICK_IN_FLIGHT
QUICK_IN_FLIGHT = 15


async def _client_peak_mb(url: str) -> tuple[float, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        received = 0
        async with OllamaClient(url) as client:
            async for chunk in client.generate_stream(MODEL, "a long story"):
                received += len(chunk.response)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20, received


async def memory(quick: bool) -> list[Result]:
    lab = await get_lab(worker=False)
    await lab.stop_worker()  # a fresh process: its high-water mark is this benchmark's
    proc = await lab.start_worker()
    await asyncio.sleep(1.0)  # let it settle after start-up (pollers running)
    idle_now, idle_peak = rss_mb(proc.pid)
    try:
        await lab.llm_faults(prompt_delay=0.01)
        await lab.comfy_faults(step_delay=0.0)
        n = QUICK_IN_FLIGHT if quick else IN_FLIGHT
        handles = await asyncio.gather(*(lab.start_scene() for _ in range(n)))
        await asyncio.gather(*(h.result() for h in handles))
        busy_now, busy_peak = rss_mb(proc.pid)
    finally:
        await lab.llm_faults()
        await lab.comfy_faults()
    path = lab.root / "big.ndjson"
    await record_stream(lab.ollama.url, 5_000, path, per_line=32)  # ~400 B lines
    small_peak, _ = await _peak_for(path)
    big = lab.root / "big10.ndjson"
    await _grow(path, big, 10 * 2**20)
    big_peak, received = await _peak_for(big)
    return [
        Result("memory.worker_idle_mb", idle_peak, 200.0, "lower", "MB", repeats=1,
               detail={"rss_mb": idle_now}),
        Result("memory.worker_in_flight_mb", busy_peak, 200.0, "lower", "MB", repeats=1,
               detail={"rss_after_mb": busy_now, "scenes_in_flight": n}),
        Result("memory.client_stream_10mb_peak_mb", big_peak, 1.0, "lower", "MB", repeats=1,
               detail={"stream_bytes": big.stat().st_size, "text_chars": received,
                       "peak_mb_small_stream": small_peak,
                       "small_stream_bytes": path.stat().st_size}),
    ]


async def _peak_for(path: Path) -> tuple[float, int]:
    proc, url = await replay_server(path)
    try:
        return await _client_peak_mb(url)
    finally:
        proc.kill()
        proc.wait(5)


async def _grow(src: Path, dest: Path, size: int) -> None:
    """A stream of at least ``size`` bytes: the recorded token lines repeated, one done line."""
    lines = src.read_bytes().splitlines(keepends=True)
    body, done = lines[:-1], lines[-1]
    out: list[bytes] = []
    total = 0
    while total < size:
        out.extend(body)
        total += sum(len(x) for x in body)
    dest.write_bytes(b"".join(out) + done)
    show_path(dest).write_bytes(show_path(src).read_bytes())  # the same model's /api/show
