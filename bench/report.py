"""Benchmark results: one row per figure, printed as a table and written as JSON.

Every ratio is measured within one run on one machine; figures carry median and spread of the
repeats so a noisy machine shows as noise, not as a verdict.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Result", "machine_info", "print_table", "spread", "write_json"]


@dataclass
class Result:
    """One figure. ``ok`` compares ``value`` with ``target`` in the direction ``better``."""

    name: str
    value: float
    target: float | None  # None: a figure reported for information, with no target
    better: str  # "lower" or "higher"
    unit: str = ""
    median: float | None = None
    spread: float | None = None  # (max - min) / median of the repeats
    repeats: int = 1
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.better == "lower" else self.value >= self.target

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def spread(samples: Sequence[float]) -> tuple[float, float]:
    """(median, relative spread) of repeated measurements."""
    med = statistics.median(samples)
    rel = (max(samples) - min(samples)) / med if med else 0.0
    return med, rel


def machine_info() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(results: Sequence[Result]) -> None:
    head = f"{'figure':<34} {'value':>12} {'target':>12} {'spread':>8}  ok"
    print(head)
    print("-" * len(head))
    for r in results:
        sign = "<=" if r.better == "lower" else ">="
        spread_txt = f"{r.spread:.0%}" if r.spread is not None else "-"
        target = f"{sign}{r.target:>10.3f}" if r.target is not None else f"{'(info)':>12}"
        verdict = "-" if r.ok is None else ("yes" if r.ok else "NO")
        print(f"{r.name:<34} {r.value:>10.3f}{r.unit:>2} {target} {spread_txt:>8}  {verdict}")


def write_json(results: Sequence[Result], path: Path, *, quick: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine_info(), "quick": quick, "results": [r.as_json() for r in results]}
    path.write_text(json.dumps(doc, indent=2) + "\n")
