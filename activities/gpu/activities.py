"""The ``acquire_gpu`` activity: wait until the GPU scheduler grants a render a GPU.

The scene workflow cannot call the scheduler's update itself (workflows only signal), so this
activity waits for the grant on the lease queue (served by every worker, waiting holds no GPU)
and returns it; the workflow then schedules the render on the granted GPU's task queue, where
the render activity takes the same lease (same holder) and renews it. The grant is in transit for
the moment between the two: the scheduler's ``lease_ttl_s`` covers it.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import TemporalError

from activities.calllog import call_context
from activities.gpu.lease import GpuLeases
from workflows_temporal.gpu_contracts import LeaseGrant, LeaseRequest

__all__ = ["LeaseActivities"]


class LeaseActivities:
    """Activities over the worker's ``GpuLeases``. Idempotent: asking again with the same
    holder returns the same grant (or keeps the place in line)."""

    def __init__(self, leases: GpuLeases) -> None:
        self.leases = leases

    @activity.defn(name="acquire_gpu")
    async def acquire_gpu(self, req: LeaseRequest) -> LeaseGrant:
        """Wait (heartbeating every 2 s) for the grant of ``req``; cancellable: a cancelled
        waiter leaves the line."""
        info = activity.info()
        with call_context(workflow_id=info.workflow_id, attempt=info.attempt,
                          activity="acquire_gpu"):
            try:
                return await self.leases.acquire(
                    req.model_copy(update={"worker": self.leases.worker}), beat=activity.heartbeat)
            except BaseException:
                await self.leases.release(req.holder)
                raise

    @activity.defn(name="try_gpu")
    async def try_gpu(self, req: LeaseRequest) -> LeaseGrant:
        """The scene's fast path, run as a local activity: one ``acquire`` that does not wait.
        Granted, or "not yet" (also when the scheduler does not answer): then the scene runs
        ``acquire_gpu``, which waits. Saves a task-queue round trip for an idle GPU."""
        request = req.model_copy(update={"worker": self.leases.worker, "park": False})
        try:
            grant: LeaseGrant = await self.leases.client.get_workflow_handle(
                self.leases.scheduler_id).execute_update("acquire", request,
                                                         result_type=LeaseGrant)
        except TemporalError:
            return LeaseGrant(holder=req.holder)
        return grant
