"""GpuSchedulerWorkflow on the real dev server: updates, signals, expiry and continue-as-new."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.fixtures.common import wait_until
from workflows_temporal.gpu_contracts import (
    GpuRegistration,
    LeaseGrant,
    LeaseKind,
    LeaseRelease,
    LeaseRenewal,
    LeaseRequest,
    SchedulerConfig,
    SchedulerState,
)
from workflows_temporal.gpu_scheduler import GpuSchedulerWorkflow

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def queue(dev_env: WorkflowEnvironment) -> AsyncIterator[str]:
    name = f"sched-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=name, workflows=[GpuSchedulerWorkflow]):
        yield name


async def start(client: Client, queue: str, **config: Any) -> WorkflowHandle[Any, Any]:
    handle = await client.start_workflow(
        GpuSchedulerWorkflow.run, SchedulerState(config=SchedulerConfig(**config)),
        id=f"gpu-scheduler-{uuid.uuid4()}", task_queue=queue)
    await handle.signal(GpuSchedulerWorkflow.register, GpuRegistration(gpu="a", hosts_llm=True))
    return handle


async def acquire(handle: WorkflowHandle[Any, Any], holder: str, kind: LeaseKind) -> LeaseGrant:
    return await handle.execute_update(
        GpuSchedulerWorkflow.acquire, LeaseRequest(holder=holder, kind=kind))


async def test_a_killed_holders_lease_is_taken_back_and_the_next_is_granted(
    dev_env: WorkflowEnvironment, queue: str
) -> None:
    handle = await start(dev_env.client, queue, lease_ttl_s=1.0, wait_slice_s=10.0)
    assert (await acquire(handle, "dead/render", LeaseKind.IMAGE)).granted
    waiting = asyncio.create_task(acquire(handle, "next/write", LeaseKind.LLM))
    # "next" keeps renewing its wait; "dead" never renews: after ~1 s its lease is gone.
    while not waiting.done():
        await handle.signal(GpuSchedulerWorkflow.renew, LeaseRenewal(holders=["next/write"]))
        await asyncio.wait([waiting], timeout=0.3)
    grant = waiting.result()
    assert grant.granted and grant.gpu == "a" and grant.evict, "the LLM evicts the image model"
    stats = await handle.query(GpuSchedulerWorkflow.stats)
    assert stats["expired"] == 1 and stats["switches"] == 1
    await handle.terminate()


async def test_the_scheduler_continues_as_new_and_keeps_leases_and_waiters(
    dev_env: WorkflowEnvironment, queue: str
) -> None:
    handle = await start(dev_env.client, queue, history_limit=30, wait_slice_s=2.0,
                         lease_ttl_s=60.0, render_depth=1)
    assert (await acquire(handle, "s1/render", LeaseKind.IMAGE)).granted
    waiter = await acquire(handle, "s2/render", LeaseKind.IMAGE)
    assert not waiter.granted and waiter.position == 1

    async def continued() -> bool:
        await handle.signal(GpuSchedulerWorkflow.renew,
                            LeaseRenewal(holders=["s1/render", "s2/render"]))
        await handle.signal(GpuSchedulerWorkflow.register, GpuRegistration(gpu="a"))
        stats = await handle.query(GpuSchedulerWorkflow.stats)
        return bool(stats["runs"] >= 2)

    await wait_until(continued, timeout=30, interval=0.05, what="a continue-as-new")
    stats = await handle.query(GpuSchedulerWorkflow.stats)
    assert "s1/render" in stats["leases"] and stats["pending"] == 1, stats
    await handle.signal(GpuSchedulerWorkflow.release, LeaseRelease(holder="s1/render"))
    assert (await acquire(handle, "s2/render", LeaseKind.IMAGE)).granted, "its place was kept"
    await handle.terminate()


async def test_more_waiters_than_temporal_admits_updates_follow_the_line_by_query(
    dev_env: WorkflowEnvironment, queue: str
) -> None:
    """Temporal refuses more than ~10 updates in flight per workflow: only MAX_PARKED wait in
    the scheduler, the others get "not yet" at once and follow the line with the query."""
    handle = await start(dev_env.client, queue, render_depth=1, wait_slice_s=3.0)
    grants = await asyncio.wait_for(asyncio.gather(*(
        acquire(handle, f"s{i}/render", LeaseKind.IMAGE) for i in range(14))), 30)
    assert sum(g.granted for g in grants) == 1
    assert sorted(g.position for g in grants if not g.granted) == list(range(1, 14))
    first = next(g.holder for g in grants if g.granted)
    await handle.signal(GpuSchedulerWorkflow.release, LeaseRelease(holder=first))
    second = next(g.holder for g in grants if g.position == 1)

    async def granted() -> bool:
        return (await handle.query(GpuSchedulerWorkflow.lease, second)).granted

    await wait_until(granted, timeout=10, what="the next in line to be granted")
    await handle.terminate()
