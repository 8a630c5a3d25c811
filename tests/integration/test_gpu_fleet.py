"""Many stories, few GPUs (issue 13), end to end on the real dev server and emulators.

One shared GPU: Ollama and ComfyUI emulators linked (`emulate comfyui --shared-gpu-with`), so a
render while the LLM is resident fails with torch.cuda.OutOfMemoryError, as on a real 12-24 GB
card. Six stories at once must finish with no OOM, no GPU job twice and fewer model switches
than scenes, also when the worker running the GPU scheduler is killed mid-run. Two GPUs: both
are used, and a GPU whose worker is killed for good has its renders finished on the other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from tests.fixtures.common import free_port, wait_until
from tests.fixtures.processes import Services, answers, polled, start_services
from workflows_temporal.contracts import GpuSharing, ImageStatus, StoryRequest, StoryResult
from workflows_temporal.policies import GPU_SCHEDULER_ID, image_queue
from workflows_temporal.story import StoryWorkflow

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="session")]

SCENES = 2
# Slow enough that stories overlap and a kill lands mid-run: a render ~1.2 s, a checkpoint load
# 0.4 s, an LLM load 0.2 s (x time scale 0.02).
COMFY = {"step_delay": 3.0, "checkpoint_load_delay": 20.0}


async def stats(client: Client) -> dict[str, Any]:
    result: dict[str, Any] = await client.get_workflow_handle(GPU_SCHEDULER_ID).query("stats")
    return result


async def start_stories(
    client: Client, count: int, sharing: GpuSharing
) -> list[WorkflowHandle[Any, StoryResult]]:
    handles = []
    for n in range(count):
        request = StoryRequest(
            directions=[f"Story {n}: the fox finds door {k}" for k in range(SCENES)],
            model="llama3.2", template="scene", gpu_sharing=sharing)
        handles.append(await client.start_workflow(
            StoryWorkflow.run, request, id=f"fleet-{uuid.uuid4()}", task_queue="storyloom-workflows",
            result_type=StoryResult))
    return handles


async def finish(handles: list[WorkflowHandle[Any, StoryResult]]) -> list[StoryResult]:
    return list(await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 240))


def assert_all_illustrated(results: list[StoryResult], count: int) -> None:
    scenes = [s for r in results for s in r.scenes]
    assert len(scenes) == count * SCENES
    failed = [(s.workflow_id, s.image_error) for s in scenes if s.image_status != ImageStatus.DONE]
    assert not failed, f"scenes without an image: {failed}"


async def comfy_stats(services: Services, url: str) -> dict[str, Any]:
    result: dict[str, Any] = await services.emulator_get(url, "/_emulator/stats")
    return result


def executed_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    old = before.get("executed_by_prompt", {})
    return {pid: n - old.get(pid, 0) for pid, n in after.get("executed_by_prompt", {}).items()
            if n - old.get(pid, 0) > 0}


def worker_pid(identity: str) -> int:
    return int(identity.split("@", 1)[0])


async def scheduler_worker(client: Client) -> str:
    """The identity of the worker that last ran the scheduler's workflow task (its sticky one)."""
    handle = client.get_workflow_handle(GPU_SCHEDULER_ID)
    identity = ""
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            identity = event.workflow_task_started_event_attributes.identity
    return identity


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def one_gpu(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """Two `worker --role all` processes serving one shared GPU (the default one)."""
    root = tmp_path_factory.mktemp("one-gpu")
    running = await start_services(root, workers=2,
                                   comfy_args=["--shared-gpu-with", "{ollama_url}"])
    try:
        await running.emulator_post(running.comfy_url, COMFY)
        yield running
    finally:
        await running.close()


async def test_six_stories_share_one_gpu_without_oom_or_a_second_gpu_job(
    one_gpu: Services,
) -> None:
    before = await comfy_stats(one_gpu, one_gpu.comfy_url)

    results = await finish(await start_stories(one_gpu.client, 6, GpuSharing.SHARED))

    assert_all_illustrated(results, 6)
    after = await comfy_stats(one_gpu, one_gpu.comfy_url)
    assert after["oom_errors"] - before["oom_errors"] == 0, "a render ran beside the LLM"
    runs = executed_since(before, after)
    assert len(runs) == 6 * SCENES and set(runs.values()) == {1}, f"GPU jobs per prompt: {runs}"
    counters = await stats(one_gpu.client)
    assert counters["switches"] < 6 * SCENES, f"a switch per scene or worse: {counters}"
    assert counters["held"] == 0 and counters["pending"] == 0


async def test_killing_the_scheduler_worker_mid_run_recovers_its_leases(
    one_gpu: Services,
) -> None:
    before = await comfy_stats(one_gpu, one_gpu.comfy_url)
    handles = await start_stories(one_gpu.client, 6, GpuSharing.SHARED)
    victim: dict[str, str] = {}
    held_by_dead: set[str] = set()

    async def scheduler_worker_holds_a_lease() -> bool:
        identity = await scheduler_worker(one_gpu.client)
        leases = (await stats(one_gpu.client))["leases"]
        if identity and any(lease["kind"] == "image" and lease["worker"]
                            and worker_pid(lease["worker"]) == worker_pid(identity)
                            for lease in leases.values()):
            victim["identity"] = identity
            held_by_dead.update(h for h, lease in leases.items() if lease["worker"]
                                and worker_pid(lease["worker"]) == worker_pid(identity))
            return True
        return False

    await wait_until(scheduler_worker_holds_a_lease, timeout=60, interval=0.05,
                     what="the scheduler's worker to render")
    dead = worker_pid(victim["identity"])
    name = next(n for n, p in one_gpu.workers().items() if p.pid == dead)
    one_gpu.kill(name)  # kill -9: the scheduler's workflow task and the lease holder die

    async def dead_worker_holds_nothing() -> bool:
        # A dead holder's lease is taken back when its TTL runs out, or, when the holder's
        # retried attempt asks first (both take ~10 s: a race), it follows that attempt to the
        # live worker. Either way the dead worker holds nothing for long.
        try:
            leases = (await stats(one_gpu.client))["leases"]
        except (RPCError, WorkflowQueryFailedError):  # its workflow task is moving over
            return False
        return not any(h in held_by_dead and lease["worker"]
                       and worker_pid(lease["worker"]) == dead for h, lease in leases.items())

    await wait_until(dead_worker_holds_nothing, timeout=120, interval=0.2,
                     what="the dead worker's leases to be taken back or to follow their holders")
    results = await finish(handles)

    assert_all_illustrated(results, 6)
    after = await comfy_stats(one_gpu, one_gpu.comfy_url)
    assert after["oom_errors"] - before["oom_errors"] == 0
    runs = executed_since(before, after)
    assert set(runs.values()) == {1}, f"a GPU job ran twice: {runs}"
    counters = await stats(one_gpu.client)
    assert counters["held"] == 0 and counters["pending"] == 0
    one_gpu.start_worker()  # the module's next user finds two workers again


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def two_gpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Services]:
    """GPU "" (worker-1, role all) and GPU "g2" (its own ComfyUI and `worker --role image`);
    the LLM on its own GPU (separate)."""
    root = tmp_path_factory.mktemp("two-gpus")
    running = await start_services(root, extra_env={"STORYLOOM_GPU_SHARING": "separate"})
    try:
        port = free_port()
        running.start("comfyui-g2", ["emulate", "comfyui", "--comfy-port", str(port),
                                     "--root", str(root / "comfy-g2"), "--time-scale", "0.02"])
        running.env["G2_COMFY_URL"] = url = f"http://127.0.0.1:{port}"
        await wait_until(lambda: answers(url + "/system_stats"), timeout=30, interval=0.2,
                         what="the second ComfyUI")
        start_g2(running)
        for comfy in (running.comfy_url, url):
            await running.emulator_post(comfy, COMFY)
        yield running
    finally:
        await running.close()


def start_g2(services: Services) -> None:
    services.start("worker-g2", ["worker", "--role", "image", "--gpu", "g2"],
                   env={"STORYLOOM_COMFYUI_URL": services.env["G2_COMFY_URL"]})


async def g2_ready(services: Services) -> None:
    async def ready() -> bool:
        gpus = (await stats(services.client))["gpus"] if await polled(
            services.client, image_queue("g2"), TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY) else {}
        return bool(gpus.get("g2", {}).get("alive"))

    await wait_until(ready, timeout=40, interval=0.2, what="GPU g2 to register")


async def test_two_gpus_share_the_renders_and_a_dead_gpu_hands_its_renders_over(
    two_gpus: Services,
) -> None:
    await g2_ready(two_gpus)
    g2_url = two_gpus.env["G2_COMFY_URL"]
    before = {url: await comfy_stats(two_gpus, url) for url in (two_gpus.comfy_url, g2_url)}
    handles = await start_stories(two_gpus.client, 6, GpuSharing.SEPARATE)

    async def g2_rendered_one_and_runs_another() -> bool:
        done = executed_since(before[g2_url], await comfy_stats(two_gpus, g2_url))
        queue = await two_gpus.emulator_get(g2_url, "/queue")
        return bool(done) and bool(queue.get("queue_running"))

    await wait_until(g2_rendered_one_and_runs_another, timeout=60, interval=0.05,
                     what="GPU g2 to render")
    two_gpus.kill("worker-g2")  # for good, mid-render: its ComfyUI finishes the job alone

    results = await finish(handles)

    assert_all_illustrated(results, 6)
    runs = {url: executed_since(before[url], await comfy_stats(two_gpus, url))
            for url in before}
    assert runs[two_gpus.comfy_url] and runs[g2_url], f"both GPUs rendered: {runs}"
    every = [n for per_gpu in runs.values() for n in per_gpu.values()]
    assert sum(every) == 6 * SCENES, f"a GPU job ran twice (on one GPU or on both): {runs}"
    assert len({pid for per_gpu in runs.values() for pid in per_gpu}) == 6 * SCENES
    counters = await stats(two_gpus.client)
    assert counters["gpus"]["g2"]["alive"] is False, "the dead GPU was dropped"
    assert counters["held"] == 0
