"""GpuSchedulerWorkflow: the one owner of every GPU of a fleet; it grants leases (issue 13).

A long-running workflow (id ``policies.GPU_SCHEDULER_ID``) started by the first GPU worker with
signal-with-start. Lease holders (the ``acquire_gpu`` activity, the render and LLM activities)
talk to it through the client:

- update ``acquire(LeaseRequest) -> LeaseGrant``: joins the line (or keeps its place) and waits
  up to ``wait_slice_s`` for the grant, then answers "not yet". Temporal admits only about 10
  updates in flight per workflow, so at most ``MAX_PARKED`` wait; the others answer "not yet" at
  once and their callers follow the line with the query ``lease`` (queries add no history);
- signal ``renew(LeaseRenewal)`` every few seconds per worker process, ``release(LeaseRelease)``
  at the end; signal ``register(GpuRegistration)`` from each GPU worker;
- query ``stats`` for counters (switches, grants per kind, expired leases, max wait).

The decisions live in ``gpu_pool.GpuPool``. The run loop sleeps until the next expiry or the next
message, expires and grants. Continue-as-new when the history grows: waiting updates are answered
"not yet", new ones are refused until the run ends, and the state is carried (ids only).
Deterministic: times come from ``workflow.now()``.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows_temporal.gpu_contracts import (
        GpuRegistration,
        LeaseGrant,
        LeaseRelease,
        LeaseRenewal,
        LeaseRequest,
        SchedulerState,
    )
    from workflows_temporal.gpu_pool import GpuPool

__all__ = ["MAX_PARKED", "ONE_NAME_PER_URL_PATCH", "GpuSchedulerWorkflow"]

# A ComfyUI URL serving one live GPU is not registered under a second name (issue 13).
ONE_NAME_PER_URL_PATCH = "gpu-one-name-per-url"

# Updates that wait inside the workflow at once; the server refuses more than ~10 in flight
# (history.maxInFlightUpdates), and quick ones (grants, "not yet") need room too.
MAX_PARKED = 5


def _now() -> float:
    return workflow.now().timestamp()


@workflow.defn(name="GpuSchedulerWorkflow")
class GpuSchedulerWorkflow:
    """Grants GPU leases until cancelled; continues as new before its history grows large."""

    @workflow.init
    def __init__(self, state: SchedulerState) -> None:
        self._pool = GpuPool(state)
        self._dirty = False
        self._draining = False
        self._parked = 0

    @workflow.run
    async def run(self, state: SchedulerState) -> None:
        info = workflow.info()
        while True:
            now = _now()
            self._pool.expire(now)
            self._pool.schedule(now)
            if info.is_continue_as_new_suggested() or (
                info.get_current_history_length() > state.config.history_limit
            ):
                break
            self._dirty = False
            timeout = self._pool.next_deadline(now) - now
            try:
                await workflow.wait_condition(lambda: self._dirty, timeout=timeout)
            except TimeoutError:
                pass
        self._draining = True  # waiting updates answer "not yet"; their callers ask the next run
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._pool.state.counters.runs += 1
        workflow.continue_as_new(self._pool.state)

    @workflow.signal
    def register(self, reg: GpuRegistration) -> None:
        self._pool.register(reg, _now(),
                            one_name_per_url=workflow.patched(ONE_NAME_PER_URL_PATCH))
        self._dirty = True

    @workflow.signal
    def renew(self, renewal: LeaseRenewal) -> None:
        self._pool.renew(renewal, _now())

    @workflow.signal
    def release(self, rel: LeaseRelease) -> None:
        self._pool.release(rel.holder)
        self._dirty = True

    @workflow.update
    async def acquire(self, req: LeaseRequest) -> LeaseGrant:
        """The grant, at once or within ``wait_slice_s``; "not yet" (granted False) otherwise."""
        grant = self._pool.request(req, _now())
        if grant.granted:
            return grant
        self._dirty = True
        if self._parked >= MAX_PARKED or not req.park:
            return grant  # "not yet": the caller follows the line with the query ``lease``
        leases = self._pool.state.leases
        self._parked += 1
        try:
            await workflow.wait_condition(
                lambda: req.holder in leases or self._draining,
                timeout=self._pool.state.config.wait_slice_s,
            )
        except TimeoutError:
            pass
        finally:
            self._parked -= 1
        return self._pool.answer(req.holder)

    @acquire.validator
    def _accepting(self, req: LeaseRequest) -> None:
        if self._draining:
            raise ValueError("the GPU scheduler is continuing as new; ask again")

    @workflow.query
    def lease(self, holder: str) -> LeaseGrant:
        """Where ``holder`` stands: granted, or its place in line (0: unknown, ask again)."""
        return self._pool.answer(holder)

    @workflow.query
    def stats(self) -> dict[str, Any]:
        """Counters and the current leases/GPUs (see the README, "Many stories, few GPUs")."""
        return self._pool.stats()
