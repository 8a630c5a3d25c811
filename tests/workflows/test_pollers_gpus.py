"""With named GPUs, renders go to whichever GPU the scheduler grants: "No worker is polling
storyloom-image" is only true when no registered GPU's image queue has a poller (issue 13: the
check looked at the terminal's STORYLOOM_GPU queue and warned falsely). Real dev server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starter.pollers import queues_needed, silent_queues
from tests.fixtures.common import wait_until
from workflows_temporal.gpu_contracts import GpuRegistration, SchedulerState
from workflows_temporal.gpu_scheduler import GpuSchedulerWorkflow
from workflows_temporal.policies import GPU_SCHEDULER_ID, image_queue

pytestmark = pytest.mark.asyncio(loop_scope="session")


@activity.defn(name="render")
async def render() -> None:  # never called: the worker only has to poll
    return None


@pytest_asyncio.fixture(loop_scope="session")
async def scheduler(dev_env: WorkflowEnvironment) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    queue = f"sched-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[GpuSchedulerWorkflow]):
        handle = await dev_env.client.start_workflow(
            GpuSchedulerWorkflow.run, SchedulerState(), id=GPU_SCHEDULER_ID, task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
        yield handle
        await handle.terminate()


async def test_a_gpu_named_worker_serves_a_scene_that_pins_no_gpu(
    dev_env: WorkflowEnvironment, scheduler: WorkflowHandle[Any, Any]
) -> None:
    gpu = f"gpu{uuid.uuid4().hex[:8]}"
    client = dev_env.client
    image_need = queues_needed(gpu="")[-1]

    async def image_silent() -> bool:
        return any(n.queue == image_need.queue for n in await silent_queues(client, [image_need]))

    assert await image_silent(), "no image worker at all: the warning is right"
    async with Worker(client, task_queue=image_queue(gpu), activities=[render]):
        await scheduler.signal(GpuSchedulerWorkflow.register, GpuRegistration(gpu=gpu))
        # e76591a: "No worker is polling storyloom-image" while GPU gpu… served every render.
        await wait_until(lambda: _not(image_silent), timeout=30,
                         what=f"{image_queue(gpu)}'s poller to count for storyloom-image")
        await scheduler.signal(GpuSchedulerWorkflow.register,
                               GpuRegistration(gpu=gpu, leaving=True))
        await wait_until(image_silent, timeout=30, what="a GPU that left to stop counting")


async def _not(check: Any) -> bool:
    return not await check()
