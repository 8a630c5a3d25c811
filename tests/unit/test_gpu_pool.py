"""The GPU scheduler's decisions (issue 13), driven with plain clock values."""

from __future__ import annotations

from workflows_temporal.gpu_contracts import (
    GpuRegistration,
    LeaseKind,
    LeaseRenewal,
    LeaseRequest,
    SchedulerConfig,
    SchedulerState,
)
from workflows_temporal.gpu_pool import GpuPool

LLM, IMAGE = LeaseKind.LLM, LeaseKind.IMAGE


def pool(*gpus: tuple[str, bool], **config: float) -> GpuPool:
    p = GpuPool(SchedulerState(config=SchedulerConfig(**config)))  # type: ignore[arg-type]
    for name, hosts_llm in gpus:
        p.register(GpuRegistration(gpu=name, hosts_llm=hosts_llm), 0.0)
    return p


def ask(p: GpuPool, holder: str, kind: LeaseKind, now: float = 1.0, gpu: str | None = None):
    return p.request(LeaseRequest(holder=holder, kind=kind, gpu=gpu), now)


def test_a_render_never_shares_the_gpu_with_the_llm() -> None:
    p = pool(("a", True), render_depth=1)
    assert ask(p, "s1/write", LLM).granted
    assert ask(p, "s2/write", LLM).granted, "llm leases are shared"
    assert not ask(p, "s3/render", IMAGE).granted, "no render while the LLM is held"
    p.release("s1/write")
    p.release("s2/write")
    p.schedule(2.0)
    grant = p.answer("s3/render")
    assert grant.granted and grant.evict, "the first render after the LLM unloads it"
    assert not ask(p, "s4/write", LLM, 2.0).granted, "no LLM while a render holds the GPU"
    assert not ask(p, "s5/render", IMAGE, 2.0).granted, "renders are exclusive"
    assert p.stats()["switches"] == 1


def test_a_lone_story_is_granted_at_once_each_step() -> None:
    p = pool(("", True))
    for n in range(3):
        for holder, kind in ((f"s/{n}/write", LLM), (f"s/{n}/cast", LLM), (f"s/{n}/render", IMAGE)):
            assert ask(p, holder, kind, float(n)).granted
            p.release(holder)
    assert p.stats()["switches"] == 5  # llm→image→llm→image→llm→image


def test_resident_kind_is_served_first_up_to_the_bound() -> None:
    p = pool(("a", True), batch_grants=3)
    assert ask(p, "hold", LLM).granted
    assert not ask(p, "r1", IMAGE).granted
    granted = [ask(p, f"w{i}", LLM).granted for i in range(5)]
    assert granted == [True, True, True, False, False], "3 more llm grants, then the render"
    for holder in ("hold", "w0", "w1", "w2"):
        p.release(holder)
    p.schedule(3.0)
    assert p.answer("r1").granted
    p.release("r1")
    p.schedule(4.0)
    assert p.answer("w3").granted and p.answer("w4").granted
    assert p.stats()["max_passed"] <= 3 + 1


def test_renders_wait_while_the_image_model_batch_runs() -> None:
    p = pool(("a", True), batch_grants=8, render_depth=1)
    for i in range(4):
        ask(p, f"r{i}", IMAGE)
    assert p.answer("r0").granted
    assert not ask(p, "w0", LLM).granted
    for i in range(3):
        p.release(f"r{i}")
        p.schedule(2.0 + i)
        assert p.answer(f"r{i + 1}").granted, "pending renders first: the model is resident"
    p.release("r3")
    p.schedule(9.0)
    assert p.answer("w0").granted
    assert p.stats()["switches"] == 1


def test_an_unrenewed_lease_is_taken_back_after_the_ttl() -> None:
    p = pool(("a", False), lease_ttl_s=10.0, render_depth=1)
    assert ask(p, "dead/render", IMAGE, 0.0).granted
    assert not ask(p, "next/render", IMAGE, 1.0).granted
    p.renew(LeaseRenewal(holders=["dead/render"]), 5.0)
    p.expire(14.0)
    p.schedule(14.0)
    assert not p.answer("next/render").granted, "renewed at 5 s: still held at 14 s"
    ask(p, "next/render", IMAGE, 14.0)  # the waiter keeps asking
    p.register(GpuRegistration(gpu="a"), 14.0)  # the GPU's worker is alive
    p.expire(15.5)
    p.schedule(15.5)
    assert p.answer("next/render").granted
    assert p.stats()["expired"] == 1
    assert ask(p, "dead/render", IMAGE, 16.0).position > 0, "a late holder queues again"


def test_renders_spread_over_gpus_and_leave_a_silent_gpu() -> None:
    p = pool(("a", False), ("b", False), gpu_ttl_s=15.0, render_depth=1)
    first, second = ask(p, "r1", IMAGE), ask(p, "r2", IMAGE)
    assert {first.gpu, second.gpu} == {"a", "b"}
    assert not ask(p, "r3", IMAGE).granted
    p.register(GpuRegistration(gpu=second.gpu or ""), 10.0)  # only one keeps registering
    p.renew(LeaseRenewal(holders=["r3"]), 15.0)  # r3's worker is alive and waiting
    p.release("r1")
    p.release("r2")
    p.expire(20.0)
    p.schedule(20.0)
    assert p.answer("r3").gpu == second.gpu, "the silent GPU gets no new work"
    assert p.stats()["gpus"][first.gpu or ""]["alive"] is False


def test_renders_prefer_the_gpu_without_the_llm() -> None:
    p = pool(("llm-box", True), ("b", False))
    assert ask(p, "w", LLM).granted
    grant = ask(p, "r", IMAGE)
    assert grant.granted and grant.gpu == "b" and not grant.evict


def test_llm_without_a_shared_gpu_is_not_scheduled() -> None:
    p = pool(("a", False))
    grant = ask(p, "w", LLM)
    assert grant.granted and grant.gpu is None
    assert ask(p, "r", IMAGE).granted, "the LLM is elsewhere: renders do not wait for it"


def test_asking_again_is_idempotent_and_keeps_the_place() -> None:
    p = pool(("a", False), render_depth=1)
    assert ask(p, "r1", IMAGE).granted
    assert ask(p, "r2", IMAGE).position == 1
    assert ask(p, "r3", IMAGE).position == 2
    assert ask(p, "r2", IMAGE, 2.0).position == 1
    assert ask(p, "r1", IMAGE, 2.0).granted, "the holder's retry gets its own lease back"
    assert p.stats()["grants"]["image"] == 1


def test_a_render_already_in_the_gpu_slot_goes_before_older_waiters() -> None:
    """A render activity waiting in its GPU's only task slot must not be overtaken by grants
    whose renders cannot start until it leaves the slot (a livelock seen in the 2-GPU test)."""
    p = pool(("a", False), lease_ttl_s=10.0, render_depth=1)
    assert ask(p, "busy", IMAGE, 0.0).granted
    ask(p, "older", IMAGE, 1.0)
    p.request(LeaseRequest(holder="in-slot", kind=IMAGE, gpu="a", in_slot=True), 2.0)
    p.release("busy")
    p.schedule(3.0)
    assert p.answer("in-slot").granted and not p.answer("older").granted


def test_a_waiter_whose_worker_died_is_forgotten_not_granted() -> None:
    p = pool(("a", False), lease_ttl_s=10.0, render_depth=1)
    assert ask(p, "busy", IMAGE, 0.0).granted
    ask(p, "dead-waiter", IMAGE, 1.0)
    ask(p, "live-waiter", IMAGE, 2.0)
    for t in (4.0, 8.0, 12.0):
        p.renew(LeaseRenewal(holders=["busy", "live-waiter"]), t)
        p.register(GpuRegistration(gpu="a"), t)
    p.expire(12.5)
    p.release("busy")
    p.schedule(12.5)
    assert p.answer("live-waiter").granted
    assert p.answer("dead-waiter").position == 0, "forgotten"


def test_one_render_waits_in_comfyui_behind_the_running_one_and_a_third_waits_here() -> None:
    p = pool(("a", True), ("b", False), render_depth=2)
    grants = [ask(p, f"r{i}", IMAGE) for i in range(5)]
    assert [g.gpu for g in grants[:4]].count("a") == 2 and [g.gpu for g in grants[:4]].count(
        "b") == 2, "spread first, then the second place of each ComfyUI queue"
    assert not grants[4].granted
    assert not ask(p, "w", LLM).granted, "no LLM beside the renders"


def test_one_comfyui_under_two_gpu_names_counts_as_one_gpu() -> None:
    """Two workers started together on one ComfyUI (role all = GPU '', and --gpu gpu0) both
    pass the worker's check; the scheduler keeps the first name (e76591a: two GPUs, both
    hosting the LLM, so renders overlapped the LLM and ran out of memory)."""
    p = GpuPool(SchedulerState())
    url = "http://127.0.0.1:8188"
    assert p.register(GpuRegistration(gpu="", hosts_llm=True, comfyui_url=url), 0.0,
                      one_name_per_url=True)
    assert not p.register(GpuRegistration(gpu="gpu0", hosts_llm=True, comfyui_url=url + "/"),
                          0.5, one_name_per_url=True)
    assert [name for name, g in p.stats()["gpus"].items() if g["alive"]] == [""]  # type: ignore[attr-defined]
    assert ask(p, "s1/write", LLM).granted
    assert not ask(p, "s2/render", IMAGE).granted, "no second GPU to render beside the LLM"
    p.register(GpuRegistration(gpu="", leaving=True), 2.0)
    assert p.register(GpuRegistration(gpu="gpu0", comfyui_url=url), 2.5, one_name_per_url=True)
