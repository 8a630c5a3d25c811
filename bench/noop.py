"""A no-op workflow of eight sequential no-op activities, and a worker process that runs it.

The throughput baseline: the same number of steps as an illustrated scene, on the same server,
with nothing inside. Run as ``python -m bench.noop ADDRESS QUEUE`` (prints "ready" when polling).
Imports stay minimal: the workflow sandbox re-imports this module.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

from temporalio import activity, workflow

__all__ = ["STEPS", "NoopScene", "noop_step"]

STEPS = 8  # load_context .. attach_image with free_llm_vram (shared GPU)


@activity.defn(name="bench_noop_step")
async def noop_step(n: int) -> int:
    """Returns its input: no I/O, no work."""
    return n


@workflow.defn(name="BenchNoopScene")
class NoopScene:
    """``STEPS`` no-op activities one after the other; returns how many ran."""

    @workflow.run
    async def run(self) -> int:
        for i in range(STEPS):
            await workflow.execute_activity(
                noop_step, i, start_to_close_timeout=timedelta(seconds=30)
            )
        return STEPS


async def _serve(address: str, queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address)
    async with Worker(client, task_queue=queue, workflows=[NoopScene], activities=[noop_step]):
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(_serve(sys.argv[1], sys.argv[2]))
    finally:
        sys.stdout.flush()
        os._exit(0)
