"""The GPU scheduler's decisions: who may use which GPU now (pure, deterministic, no Temporal).

``GpuPool`` wraps a ``SchedulerState`` and is driven by ``GpuSchedulerWorkflow`` with times from
``workflow.now()``; unit tests drive it with plain numbers.

Rules (README "Many stories, few GPUs"):

- A GPU belongs to one kind at a time (``resident``): ``llm`` leases are shared (Ollama serves
  requests in parallel); at most ``render_depth`` ``image`` leases (ComfyUI runs its queue one
  prompt at a time: a second render waits in ComfyUI's queue, so the GPU does not idle through
  the Temporal round trips between two renders). A render never runs while an LLM lease is held
  on its GPU, and no LLM lease is granted while a render holds it.
- Batch by what is resident: while the resident kind has work waiting, the GPU stays with it; once
  a request of the other kind waits, the resident kind gets at most ``batch_grants`` more grants
  (and at most ``batch_window_s``), then the GPU switches as soon as its holders release.
- A lease not renewed for ``lease_ttl_s`` is taken back; a waiter that stopped asking is forgotten;
  a GPU not registered for ``gpu_ttl_s`` gets no new grants (its waiting renders go elsewhere).
- Image requests not pinned to a GPU go to the GPU that needs no switch, then to a GPU without
  the LLM, then to the least used. LLM requests go to the GPU that hosts the LLM; when none
  does (``separate``), they are granted at once with ``gpu=None``.
"""

from __future__ import annotations

from workflows_temporal.gpu_contracts import (
    GpuRegistration,
    GpuState,
    Lease,
    LeaseGrant,
    LeaseKind,
    LeaseRenewal,
    LeaseRequest,
    SchedulerState,
    Waiting,
)

__all__ = ["GpuPool"]


class GpuPool:
    """Leases, waiting requests and GPUs of one fleet. Every method takes ``now`` in seconds."""

    def __init__(self, state: SchedulerState) -> None:
        self.state = state

    # ---- inputs -------------------------------------------------------------------------

    def register(self, reg: GpuRegistration, now: float, *, one_name_per_url: bool = False
                 ) -> bool:
        """A GPU worker is alive (or, ``leaving``, stops serving this GPU now). With
        ``one_name_per_url``, a ComfyUI already serving another live GPU is not registered under
        a second name (one card counted twice; workers refuse it too): returns False."""
        if one_name_per_url and not reg.leaving and self._url_taken(reg):
            return False
        gpu = self.state.gpus.get(reg.gpu)
        if reg.leaving:
            if gpu is not None and gpu.alive:
                gpu.alive = False
                self.state.counters.dropped_gpus += 1
            return True
        if gpu is None:
            gpu = self.state.gpus[reg.gpu] = GpuState(name=reg.gpu)
        gpu.hosts_llm, gpu.alive, gpu.last_seen, gpu.worker, gpu.comfyui_url = (
            reg.hosts_llm, True, now, reg.worker, reg.comfyui_url)
        return True

    def _url_taken(self, reg: GpuRegistration) -> bool:
        url = reg.comfyui_url.rstrip("/").lower()
        return bool(url) and any(
            g.alive and g.name != reg.gpu and g.comfyui_url.rstrip("/").lower() == url
            for g in self.state.gpus.values())

    def request(self, req: LeaseRequest, now: float) -> LeaseGrant:
        """Ask for a lease (idempotent on holder); returns the grant or "not yet"."""
        lease = self.state.leases.get(req.holder)
        if lease is not None and req.gpu is not None and lease.gpu != req.gpu:
            del self.state.leases[req.holder]  # pinned elsewhere now: the old grant is void
            lease = None
        if lease is not None:  # the same holder again (its render, or a retried attempt)
            lease.expires_at = now + self.state.config.lease_ttl_s
            lease.worker = req.worker or lease.worker
            return self.answer(req.holder)
        waiting = self._waiting(req.holder)
        if waiting is None:
            self.state.waiting.append(Waiting(holder=req.holder, kind=req.kind, gpu=req.gpu,
                                              arrived=now, seen=now, worker=req.worker,
                                              in_slot=req.in_slot))
        else:
            waiting.seen, waiting.gpu, waiting.kind = now, req.gpu, req.kind
            waiting.in_slot = req.in_slot
        self.schedule(now)
        return self.answer(req.holder)

    def renew(self, renewal: LeaseRenewal, now: float) -> None:
        asking = set(renewal.holders)
        for holder in renewal.holders:
            if (lease := self.state.leases.get(holder)) is not None:
                lease.expires_at = now + self.state.config.lease_ttl_s
        for waiting in self.state.waiting:
            if waiting.holder in asking:
                waiting.seen = now
        for holder in renewal.evicted:
            lease = self.state.leases.get(holder)
            if lease is not None and lease.gpu in self.state.gpus:
                gpu = self.state.gpus[lease.gpu]
                if gpu.resident == lease.kind:
                    gpu.clean = True

    def release(self, holder: str) -> None:
        """The holder is done, or stopped waiting (a cancelled activity)."""
        self.state.leases.pop(holder, None)
        self.state.waiting = [w for w in self.state.waiting if w.holder != holder]

    def expire(self, now: float) -> None:
        """Take back unrenewed leases, forget silent waiters, drop silent GPUs."""
        cfg = self.state.config
        for holder, lease in list(self.state.leases.items()):
            if lease.expires_at < now:
                del self.state.leases[holder]
                self.state.counters.expired += 1
        # Waiters are renewed like leases; a silent one (its worker died) is forgotten.
        self.state.waiting = [w for w in self.state.waiting if w.seen + cfg.lease_ttl_s >= now]
        for gpu in self.state.gpus.values():
            if gpu.alive and gpu.last_seen + cfg.gpu_ttl_s < now:
                gpu.alive = False
                self.state.counters.dropped_gpus += 1

    def next_deadline(self, now: float) -> float:
        """When something expires next (the workflow sleeps until then or until a signal)."""
        cfg = self.state.config
        times = [lease.expires_at for lease in self.state.leases.values()]
        times += [w.seen + cfg.lease_ttl_s for w in self.state.waiting]
        for gpu in self.state.gpus.values():
            if gpu.alive:
                times.append(gpu.last_seen + cfg.gpu_ttl_s)
            if gpu.other_waiting_since is not None:
                times.append(gpu.other_waiting_since + cfg.batch_window_s)
        return max(min(times, default=now + 60.0), now + 0.05)

    # ---- answers ------------------------------------------------------------------------

    def answer(self, holder: str) -> LeaseGrant:
        cfg = self.state.config
        lease = self.state.leases.get(holder)
        if lease is None:
            position = next((i + 1 for i, w in enumerate(self.state.waiting)
                             if w.holder == holder), 0)
            kind = next((w.kind for w in self.state.waiting if w.holder == holder),
                        LeaseKind.IMAGE)
            return LeaseGrant(holder=holder, kind=kind, ttl_s=cfg.lease_ttl_s, position=position)
        gpu = self.state.gpus.get(lease.gpu) if lease.gpu is not None else None
        evict = gpu is not None and not gpu.clean and (
            lease.kind == LeaseKind.LLM or gpu.hosts_llm)
        return LeaseGrant(holder=holder, granted=True, gpu=lease.gpu, kind=lease.kind,
                          evict=evict, ttl_s=cfg.lease_ttl_s,
                          comfyui_url=gpu.comfyui_url if gpu is not None else "")

    def stats(self) -> dict[str, object]:
        """Counters for tests, the bench and the README figures (see gpu-interface.md)."""
        counters = self.state.counters
        return {
            "switches": counters.switches,
            "grants": dict(counters.grants),
            "expired": counters.expired,
            "max_wait_s": round(counters.max_wait_s, 3),
            "max_passed": counters.max_passed,
            "dropped_gpus": counters.dropped_gpus,
            "runs": counters.runs,
            "pending": len(self.state.waiting),
            "held": len(self.state.leases),
            "leases": {h: {"kind": lease.kind.value, "gpu": lease.gpu, "worker": lease.worker}
                       for h, lease in self.state.leases.items()},
            "gpus": {
                name: {"resident": g.resident.value if g.resident else None,
                       "hosts_llm": g.hosts_llm, "alive": g.alive, "worker": g.worker,
                       "comfyui_url": g.comfyui_url,
                       "switches": g.switches, "grants": dict(g.grants),
                       "holders": sum(lease.gpu == name for lease in self.state.leases.values())}
                for name, g in self.state.gpus.items()
            },
        }

    # ---- the decision -------------------------------------------------------------------

    def schedule(self, now: float) -> list[str]:
        """Grant every waiting request the rules allow now, oldest first; the holders granted."""
        granted: list[str] = []
        for _ in range(len(self.state.waiting) + 1):  # each pass grants one or stops
            self._mark_contention(now)
            # Oldest first, but a render already in its GPU's task slot before everyone.
            for waiting in sorted(self.state.waiting, key=lambda w: not w.in_slot):
                placeable, gpu = self._place(waiting, now)
                if placeable:
                    self._grant(waiting, gpu, now)
                    granted.append(waiting.holder)
                    break
            else:
                break
        return granted

    def _waiting(self, holder: str) -> Waiting | None:
        return next((w for w in self.state.waiting if w.holder == holder), None)

    def _llm_gpu(self) -> GpuState | None:
        hosts = sorted((g for g in self.state.gpus.values() if g.alive and g.hosts_llm),
                       key=lambda g: g.name)
        return hosts[0] if hosts else None

    def _candidates(self, w: Waiting) -> list[GpuState] | None:
        """The GPUs that may serve ``w``; None: an llm request with no GPU hosting the LLM."""
        if w.gpu is not None:
            gpu = self.state.gpus.get(w.gpu)
            return [gpu] if gpu is not None and gpu.alive else []
        if w.kind == LeaseKind.LLM:
            host = self._llm_gpu()
            return None if host is None else [host]
        return [g for g in self.state.gpus.values() if g.alive]

    def _serves(self, w: Waiting, gpu: GpuState) -> bool:
        candidates = self._candidates(w)
        return candidates is not None and any(c.name == gpu.name for c in candidates)

    def _holders(self, gpu: GpuState, kind: LeaseKind) -> int:
        return sum(lease.gpu == gpu.name and lease.kind == kind
                   for lease in self.state.leases.values())

    def _mark_contention(self, now: float) -> None:
        """Start (or stop) each GPU's batch count when the other kind begins (stops) waiting."""
        for gpu in self.state.gpus.values():
            other = any(w.kind != gpu.resident and self._serves(w, gpu)
                        for w in self.state.waiting) if gpu.resident else False
            if other and gpu.other_waiting_since is None:
                gpu.other_waiting_since, gpu.batch = now, 0
            elif not other:
                gpu.other_waiting_since, gpu.batch = None, 0

    def _bound_reached(self, gpu: GpuState, now: float) -> bool:
        cfg = self.state.config
        return gpu.other_waiting_since is not None and (
            gpu.batch >= cfg.batch_grants or now - gpu.other_waiting_since >= cfg.batch_window_s)

    def _can_grant(self, gpu: GpuState, kind: LeaseKind, now: float) -> bool:
        renders = self._holders(gpu, LeaseKind.IMAGE)
        if kind == LeaseKind.LLM and renders:
            return False  # the LLM never joins a render
        if kind == LeaseKind.IMAGE and (self._holders(gpu, LeaseKind.LLM)
                                        or renders >= self.state.config.render_depth):
            return False
        if gpu.resident in (None, kind):
            return not self._bound_reached(gpu, now)
        # A switch: only when the resident kind has nothing waiting here, or its batch is over.
        resident_waits = any(w.kind == gpu.resident and self._serves(w, gpu)
                             for w in self.state.waiting)
        return not resident_waits or self._bound_reached(gpu, now)

    def _place(self, w: Waiting, now: float) -> tuple[bool, GpuState | None]:
        """(True, the GPU to grant ``w`` on; None for an unplaced llm grant) or (False, None)."""
        candidates = self._candidates(w)
        if candidates is None:
            return True, None
        usable = [g for g in candidates if self._can_grant(g, w.kind, now)]
        if not usable:
            return False, None
        usable.sort(key=lambda g: (g.resident not in (None, w.kind),
                                   self._holders(g, LeaseKind.IMAGE), g.hosts_llm,
                                   sum(g.grants.values()), g.name))
        return True, usable[0]

    def _grant(self, w: Waiting, gpu: GpuState | None, now: float) -> None:
        counters = self.state.counters
        self.state.waiting.remove(w)
        self.state.leases[w.holder] = Lease(
            holder=w.holder, kind=w.kind, gpu=gpu.name if gpu else None, granted_at=now,
            expires_at=now + self.state.config.lease_ttl_s, worker=w.worker)
        if gpu is not None:
            if gpu.resident != w.kind:
                if gpu.resident is not None:
                    gpu.switches += 1
                    counters.switches += 1
                gpu.resident, gpu.clean = w.kind, False
                gpu.other_waiting_since, gpu.batch = None, 0
            elif gpu.other_waiting_since is not None:
                gpu.batch += 1
            gpu.grants[w.kind.value] = gpu.grants.get(w.kind.value, 0) + 1
            for other in self.state.waiting:
                if self._serves(other, gpu):
                    other.passed += 1
        counters.grants[w.kind.value] = counters.grants.get(w.kind.value, 0) + 1
        counters.max_wait_s = max(counters.max_wait_s, now - w.arrived)
        counters.max_passed = max(counters.max_passed, w.passed)
