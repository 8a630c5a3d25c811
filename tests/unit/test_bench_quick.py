"""`python -m bench --quick` runs every benchmark end to end and reports every row with a number.

Benchmarks are not timed assertions: this checks that each row is measured, never its target.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROWS = {
    "overhead", "vs_direct", "throughput", "throughput.scenes_per_s", "stream.vs_official",
    "stream.vs_bare_httpx", "stream.tokens_per_s", "comfy_roundtrip", "recovery",
    "memory.worker_idle_mb", "memory.worker_in_flight_mb", "memory.client_stream_10mb_peak_mb",
}


def test_quick_bench_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["machine"]["cpus"]
    rows = {r["name"]: r for r in doc["results"]}
    if (ROOT / "bench" / "pipeline.py").exists():  # the stories benchmark adds its own rows
        assert set(rows) - ROWS, "bench/pipeline.py exists but reported no row"
    missing = ROWS - set(rows)
    assert not missing, f"rows missing: {sorted(missing)}"
    for name, row in rows.items():
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"]), row
        assert row["value"] > 0, f"{name} measured nothing: {row}"
    assert "figure" in run.stdout and "overhead" in run.stdout  # the printed table
