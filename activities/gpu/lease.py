"""Holding a GPU lease from an activity: ask GpuSchedulerWorkflow, renew, release, evict.

One ``GpuLeases`` per worker process (built by ``starter.worker``). An activity that puts a model
on a GPU wraps its work in ``async with leases.hold(request, beat=...)``:

1. ``acquire``: the update ``acquire`` on the scheduler, asked again every wait slice until
   granted (the place in the line is kept by the holder key); ``beat`` is called every 2 s
   meanwhile so the activity's heartbeat timeout never fires while it waits.
2. A grant with ``evict``: the GPU switched kind, so the other model is unloaded first (Ollama
   keep_alive 0 confirmed by /api/ps, or ComfyUI POST /free), and the scheduler is told.
3. While held, one background task renews every lease of this process every ``renew_every_s``
   (one ``renew`` signal per process, not per lease). A killed process stops renewing: the
   scheduler takes its leases back after ``lease_ttl_s``.
4. At the end (success, failure or cancel) a ``release`` signal, sent in the background so the
   activity's result does not wait for it; best effort: if it is lost, the lease expires after
   ``lease_ttl_s``.

Scheduler unreachable or continuing as new: the ask is repeated after a short backoff (the engine
retries, this is waiting for a grant, not retrying a failed call).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError, RPCStatusCode

from workflows_temporal.gpu_contracts import (
    LeaseGrant,
    LeaseKind,
    LeaseRelease,
    LeaseRenewal,
    LeaseRequest,
    SchedulerConfig,
    SchedulerState,
)
from workflows_temporal.policies import GPU_SCHEDULER_ID, SCENE_WORKFLOW_QUEUE

__all__ = ["Evictor", "GpuLeases", "holds_gpu"]

logger = logging.getLogger("storyloom.gpu")
Evictor = Callable[[], Awaitable[None]]
R = TypeVar("R")
_MAX_ASKS = 100_000  # bounded: a wait slice is 20 s, so this is weeks; the activity times out first
_POLL_S = 0.25  # how often a waiter that is not parked in the scheduler looks at the line


async def _ticking(beat: Callable[[], None] | None, every_s: float) -> None:
    while beat is not None:
        beat()
        await asyncio.sleep(every_s)


class GpuLeases:
    """The leases of one worker process (see the module doc). ``worker`` names it in stats."""

    def __init__(
        self, client: Client, *, config: SchedulerConfig | None = None,
        evict_llm: Evictor | None = None, evict_image: Evictor | None = None,
        renew_every_s: float = 3.0, scheduler_id: str = GPU_SCHEDULER_ID,
    ) -> None:
        self.client = client
        self.config = config or SchedulerConfig()
        self.worker = client.identity
        self._evictors = {LeaseKind.IMAGE: evict_llm, LeaseKind.LLM: evict_image}
        self._renew_every_s = renew_every_s
        self._scheduler_id = scheduler_id
        self._held: set[str] = set()
        self._asking: set[str] = set()  # requests waiting for a grant: renewed like leases
        self._evicted: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    @property
    def scheduler_id(self) -> str:
        return self._scheduler_id

    @property
    def held(self) -> set[str]:
        return set(self._held)

    async def ensure_scheduler(self, *, signal: str = "renew", arg: Any = None) -> None:
        """Signal the scheduler, starting it first when it does not run (signal-with-start)."""
        await self.client.start_workflow(
            "GpuSchedulerWorkflow", SchedulerState(config=self.config), id=self._scheduler_id,
            task_queue=SCENE_WORKFLOW_QUEUE, start_signal=signal,
            start_signal_args=[arg if arg is not None else LeaseRenewal(worker=self.worker)],
            static_summary="GPU scheduler: leases for every GPU of the fleet",
        )

    async def acquire(self, req: LeaseRequest, *, beat: Callable[[], None] | None = None) -> LeaseGrant:
        """Wait for the grant of ``req`` (see the module doc); cancellable."""
        handle = self.client.get_workflow_handle(self._scheduler_id)
        ticker = asyncio.create_task(_ticking(beat, 2.0))
        started = time.monotonic()
        backoff = 0.2
        self._asking.add(req.holder)
        self._start_renewer()
        try:
            for _ in range(_MAX_ASKS):
                try:
                    grant: LeaseGrant = await handle.execute_update(
                        "acquire", req, result_type=LeaseGrant)
                except RPCError as exc:
                    if exc.status == RPCStatusCode.NOT_FOUND:
                        logger.info("GPU scheduler %s is not running: starting it",
                                    self._scheduler_id)
                        with contextlib.suppress(TemporalError):
                            await self.ensure_scheduler()
                        continue
                    logger.warning("GPU scheduler unreachable (%s); asking again in %.1f s",
                                   exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except TemporalError as exc:  # refused while it continues as new, or aborted
                    logger.info("GPU scheduler busy (%s); asking again", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.2
                if not grant.granted and grant.position > 0:
                    grant = await self._follow(handle, req.holder)
                if grant.granted:
                    logger.info("gpu lease %s granted: %s on GPU %r after %.2f s%s", req.holder,
                                grant.kind.value, grant.gpu, time.monotonic() - started,
                                " (evict first)" if grant.evict else "")
                    return grant
            raise RuntimeError(f"no GPU lease for {req.holder} after {_MAX_ASKS} asks")
        finally:
            self._asking.discard(req.holder)
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _follow(self, handle: WorkflowHandle[Any, Any], holder: str) -> LeaseGrant:
        """Query the line every ``_POLL_S`` for up to a wait slice; the request stays alive
        through the renewals. Returns the last answer (position 0: forgotten, ask again)."""
        grant = LeaseGrant(holder=holder)
        for _ in range(max(1, int(self.config.wait_slice_s / _POLL_S))):
            await asyncio.sleep(_POLL_S)
            try:
                answer: LeaseGrant = await handle.query("lease", holder, result_type=LeaseGrant)
                grant = answer
            except TemporalError as exc:
                logger.info("GPU scheduler query failed (%s); asking again", exc)
                return LeaseGrant(holder=holder)
            if grant.granted or grant.position == 0:
                return grant
        return grant

    @contextlib.asynccontextmanager
    async def hold(
        self, req: LeaseRequest, *, beat: Callable[[], None] | None = None
    ) -> AsyncIterator[LeaseGrant]:
        """Hold the lease of ``req`` for the block: acquire, evict if told, renew, release."""
        try:
            grant = await self.acquire(req, beat=beat)
        except BaseException:
            await self.release(req.holder)  # a cancelled waiter leaves the line
            raise
        self._held.add(req.holder)
        self._start_renewer()
        try:
            if grant.evict:
                await self._evict(grant)
            yield grant
        finally:
            self._held.discard(req.holder)
            # Not awaited: the activity's result need not wait for the scheduler (a lost
            # release only means the lease expires after lease_ttl_s).
            task = asyncio.create_task(self.release(req.holder))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def release(self, holder: str) -> None:
        """Best effort (never raises): the lease expires anyway if the signal is lost."""
        handle = self.client.get_workflow_handle(self._scheduler_id)
        try:
            await asyncio.shield(asyncio.wait_for(
                handle.signal("release", LeaseRelease(holder=holder)), 5.0))
        except (TemporalError, TimeoutError, asyncio.CancelledError) as exc:
            logger.warning("gpu lease %s: release not delivered (%s); it expires in %.0f s",
                           holder, type(exc).__name__, self.config.lease_ttl_s)

    async def _evict(self, grant: LeaseGrant) -> None:
        evictor = self._evictors.get(grant.kind)
        began = time.monotonic()
        if evictor is not None:
            await evictor()  # a failure fails the attempt (retryable): rendering now would OOM
        logger.info("gpu %r switched to %s: %s in %.2f s", grant.gpu, grant.kind.value,
                    "other model unloaded" if evictor else "nothing to unload here",
                    time.monotonic() - began)
        self._evicted.add(grant.holder)
        await self._renew_now()

    def _start_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_loop(), name="gpu lease renewer")

    async def _renew_loop(self) -> None:
        while self._held or self._asking:
            await asyncio.sleep(self._renew_every_s)
            await self._renew_now()

    async def _renew_now(self) -> None:
        if not self._held and not self._evicted and not self._asking:
            return
        renewal = LeaseRenewal(holders=sorted(self._held | self._asking),
                               evicted=sorted(self._evicted),
                               worker=self.worker)
        try:
            await self.client.get_workflow_handle(self._scheduler_id).signal("renew", renewal)
            self._evicted.clear()
        except TemporalError as exc:
            logger.warning("gpu leases not renewed (%s): %d held", exc, len(renewal.holders))

    async def aclose(self) -> None:
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=5.0)
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer


def holds_gpu(kind: LeaseKind) -> Callable[[Callable[[Any, Any], Awaitable[R]]],
                                           Callable[[Any, Any], Awaitable[R]]]:
    """Decorate an activity method so it runs under a ``kind`` lease when ``self.gpu_leases``
    is set (an LLM worker whose Ollama shares a GPU); the holder is the activity's
    ``<workflow id>/<activity id>``, stable across its attempts."""

    def decorate(fn: Callable[[Any, Any], Awaitable[R]]) -> Callable[[Any, Any], Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(self: Any, inp: Any) -> R:
            leases: GpuLeases | None = getattr(self, "gpu_leases", None)
            if leases is None:
                return await fn(self, inp)
            info = activity.info()
            req = LeaseRequest(holder=f"{info.workflow_id}/{info.activity_id}", kind=kind,
                               worker=leases.worker)
            async with leases.hold(req, beat=activity.heartbeat):
                return await fn(self, inp)

        return wrapper

    return decorate
