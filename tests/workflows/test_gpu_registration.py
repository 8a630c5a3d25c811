"""A GPU worker joins the fleet only when it can serve (issue 13, found by a fresh user):

- one ComfyUI under a second GPU name (the scheduler would count one card twice, both hosting
  the LLM, and renders overlapped the LLM: 6 of 6 pictures out of memory) is refused, as is a
  second GPU claiming to host the LLM (STORYLOOM_GPU_SHARING=shared);
- a GPU whose ComfyUI does not answer is not registered (it got 35 grants while other GPUs
  idled), and leaves the fleet while its ComfyUI stops answering;
Against the real dev server and, for ComfyUI, the emulator over a real socket.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.gpu.lease import GpuLeases
from emulators.comfyui.server import ComfyEmulator
from starter.gpu_worker import GpuRefused, keep_registered
from starter.settings import Settings
from tests.fixtures.common import free_port, wait_until
from workflows_temporal.contracts import GpuSharing
from workflows_temporal.gpu_contracts import GpuRegistration, SchedulerState
from workflows_temporal.gpu_scheduler import GpuSchedulerWorkflow
from workflows_temporal.policies import GPU_SCHEDULER_ID

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def scheduler(dev_env: WorkflowEnvironment) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    queue = f"sched-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[GpuSchedulerWorkflow]):
        handle = await dev_env.client.start_workflow(
            GpuSchedulerWorkflow.run, SchedulerState(), id=f"gpu-scheduler-{uuid.uuid4()}",
            task_queue=queue)
        yield handle
        await handle.terminate()


def settings(tmp_path: Path, url: str, sharing: GpuSharing) -> Settings:
    return Settings(data_dir=tmp_path / "data", comfyui_url=url, gpu_sharing=sharing,
                    gpu_register_every_s=0.2)


async def refusal(client: Client, handle: WorkflowHandle[Any, Any], tmp_path: Path,
                  url: str, sharing: GpuSharing) -> str:
    leases = GpuLeases(client, scheduler_id=handle.id)
    try:
        with pytest.raises(GpuRefused) as caught:
            await asyncio.wait_for(keep_registered(leases, settings(tmp_path, url, sharing),
                                                   "gpu0", asyncio.Event()), 30)
    finally:
        await leases.aclose()
    gpus = (await handle.query(GpuSchedulerWorkflow.stats))["gpus"]
    assert "gpu0" not in gpus, "the refused GPU never reached the scheduler"
    return str(caught.value)


async def test_one_comfyui_under_a_second_gpu_name_is_refused(
    dev_env: WorkflowEnvironment, scheduler: WorkflowHandle[Any, Any], tmp_path: Path
) -> None:
    url = "http://127.0.0.1:8188"
    await scheduler.signal(GpuSchedulerWorkflow.register,
                           GpuRegistration(gpu="", hosts_llm=True, comfyui_url=url))
    # e76591a: "gpu0" registered too; the scheduler counted one card as two GPUs.
    why = await refusal(dev_env.client, scheduler, tmp_path, url + "/", GpuSharing.SEPARATE)
    assert "'gpu0'" in why and "''" in why and url in why, why
    assert "--gpu ''" in why and "another ComfyUI" in why, why


async def test_a_second_gpu_claiming_to_host_the_llm_is_refused(
    dev_env: WorkflowEnvironment, scheduler: WorkflowHandle[Any, Any], tmp_path: Path
) -> None:
    await scheduler.signal(GpuSchedulerWorkflow.register, GpuRegistration(
        gpu="a", hosts_llm=True, comfyui_url="http://127.0.0.1:8188"))
    why = await refusal(dev_env.client, scheduler, tmp_path, "http://127.0.0.1:8189",
                        GpuSharing.SHARED)
    assert "'gpu0'" in why and "'a'" in why and "STORYLOOM_GPU_SHARING=separate" in why, why


async def test_a_gpu_registers_only_while_its_comfyui_answers(
    dev_env: WorkflowEnvironment, scheduler: WorkflowHandle[Any, Any], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="storyloom.gpu")
    port = free_port()
    leases = GpuLeases(dev_env.client, scheduler_id=scheduler.id)
    stop = asyncio.Event()
    task = asyncio.create_task(keep_registered(
        leases, settings(tmp_path, f"http://127.0.0.1:{port}", GpuSharing.SEPARATE), "g1", stop))
    emulator = ComfyEmulator(tmp_path / "comfy", time_scale=0.02)

    async def gpu() -> dict[str, Any]:
        gpus: dict[str, Any] = (await scheduler.query(GpuSchedulerWorkflow.stats))["gpus"]
        return gpus.get("g1", {})

    try:
        await wait_until(lambda: "does not answer" in caplog.text, timeout=20,
                         what="the 'ComfyUI does not answer' line")
        # e76591a: registered at once, and got renders its ComfyUI could not take.
        assert not (await gpu()).get("alive"), "a GPU without ComfyUI is not registered"
        await emulator.start(port=port)
        await wait_until(lambda: _alive(gpu), timeout=40, what="g1 to register")
        await emulator.stop()
        await wait_until(lambda: _dead(gpu), timeout=40, what="g1 to leave")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await emulator.stop()
        await leases.aclose()
    assert caplog.text.count("does not answer") <= 4, "one line per outage, not one per try"


async def _alive(gpu: Any) -> bool:
    return bool((await gpu()).get("alive"))


async def _dead(gpu: Any) -> bool:
    return not (await gpu()).get("alive")


async def test_the_worker_command_exits_2_naming_both_gpus(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """What the user ran: `worker --role image --gpu gpu0` on the ComfyUI GPU '' already has."""
    url = "http://127.0.0.1:8188"
    queue = f"sched-{uuid.uuid4()}"
    async with Worker(dev_env.client, task_queue=queue, workflows=[GpuSchedulerWorkflow]):
        handle = await dev_env.client.start_workflow(
            GpuSchedulerWorkflow.run, SchedulerState(), id=GPU_SCHEDULER_ID, task_queue=queue,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)
        await handle.signal(GpuSchedulerWorkflow.register,
                            GpuRegistration(gpu="", comfyui_url=url))
        try:
            proc = await asyncio.create_subprocess_exec(
                str(Path(sys.executable).parent / "storyloom"), "worker", "--role", "image",
                "--gpu", "gpu0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                     "STORYLOOM_DATA_DIR": str(tmp_path / "data"), "STORYLOOM_COMFYUI_URL": url,
                     "STORYLOOM_GPU_SHARING": "separate", "STORYLOOM_LOG_JSON": "0",
                     "STORYLOOM_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host})
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 90)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        finally:
            await handle.terminate()
    said = (out + err).decode()
    # e76591a: the worker ran and registered "gpu0"; the scheduler counted one card twice.
    assert proc.returncode == 2, said
    assert "GPU 'gpu0' refused" in said and "GPU ''" in said and "--gpu ''" in said, said


async def test_the_scheduler_keeps_one_name_for_one_comfyui(
    scheduler: WorkflowHandle[Any, Any],
) -> None:
    """Two workers that passed their check together: the scheduler still counts one card."""
    url = "http://127.0.0.1:8190"
    for name in ("", "gpu0"):
        await scheduler.signal(GpuSchedulerWorkflow.register,
                               GpuRegistration(gpu=name, hosts_llm=True, comfyui_url=url))
    # A third GPU signalled last: once it shows, the two before it were handled (in order).
    await scheduler.signal(GpuSchedulerWorkflow.register,
                           GpuRegistration(gpu="other", comfyui_url="http://127.0.0.1:8191"))

    async def gpus() -> dict[str, Any]:
        found: dict[str, Any] = (await scheduler.query(GpuSchedulerWorkflow.stats))["gpus"]
        return found

    await wait_until(lambda: _has(gpus, "other"), timeout=20, what="the registrations")
    alive = sorted(n for n, g in (await gpus()).items() if g["alive"])
    assert alive == ["", "other"], alive  # e76591a: "", "gpu0", "other"


async def _has(gpus: Any, name: str) -> bool:
    return name in await gpus()
