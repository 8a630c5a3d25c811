"""`python -m bench [--quick] [--only NAME] [--json PATH]`: run storyloom's benchmarks.

Each benchmark starts what it needs (emulators with fixed delays, the embedded Temporal dev
server, a worker) and returns ``Result`` rows; the table is printed and the JSON written (the
latest full run is kept in bench/results/latest.json, a quick run in bench/results/quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from bench.lab import close_lab
from bench.registry import BENCHMARKS
from bench.report import Result, print_table, write_json

RESULTS_DIR = Path(__file__).resolve().parent / "results"


async def run(names: list[str], quick: bool) -> list[Result]:
    results: list[Result] = []
    try:
        for name in names:
            started = time.perf_counter()
            print(f"== {name} ...", file=sys.stderr, flush=True)
            rows = await BENCHMARKS[name](quick)
            print(f"   {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr,
                  flush=True)
            results.extend(rows)
    finally:
        await close_lab()  # the shared dev server, emulators and worker
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, shorter delays")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), help="run only NAME")
    parser.add_argument("--json", type=Path, help="where to write the JSON results")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    results = asyncio.run(run(names, args.quick))
    print_table(results)
    default = RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    target = args.json or (default if not args.only else None)
    if target is not None:
        write_json(results, target, quick=args.quick)
        print(f"results written to {target}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # in-process Workers may abort at interpreter exit (temporal notes §6)
