"""A ComfyUI job that fails out of GPU memory is retried, and its note names the likely cause
(issue 13: one card under two GPU names; an Ollama on the card outside the scheduler)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from activities.comfyui.activities import ImageActivities, render_prompt_id
from activities.comfyui.client import ComfyClient
from activities.comfyui.follow import judge
from activities.errors import ComfyExecutionError, to_application_error
from activities.templates import WorkflowManager
from tests.fixtures.comfy_emulator import txt2img_graph
from tests.fixtures.common import wait_until
from tests.fixtures.gpu_emulators import gpu_fleet
from tests.unit.test_render_activity import FAST, Beats, request
from workflows_temporal.policies import NON_RETRYABLE_TYPES


def _failed(exception_type: str, message: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        pid = request.url.path.rsplit("/", 1)[-1]
        return httpx.Response(200, json={"id": pid, "status": "failed", "outputs": {},
                                         "execution_error": {
                                             "prompt_id": pid, "node_id": "3",
                                             "node_type": "KSampler",
                                             "exception_type": exception_type,
                                             "exception_message": message}})

    return httpx.MockTransport(handler)


async def _error(exception_type: str, message: str) -> ComfyExecutionError:
    pid = str(uuid.uuid4())
    async with ComfyClient("http://comfy.test",
                           transport=_failed(exception_type, message)) as client:
        with pytest.raises(ComfyExecutionError) as caught:
            judge(await client.job_status(pid), pid, client.base_url)
    return caught.value


@pytest.mark.parametrize(("exception_type", "message"), [
    ("torch.cuda.OutOfMemoryError", "Allocation on device"),
    ("torch.OutOfMemoryError", "Allocation on device 0 would exceed allowed memory."),
    ("RuntimeError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
])
async def test_an_out_of_memory_failure_is_retried_and_names_the_likely_cause(
    exception_type: str, message: str
) -> None:
    err = to_application_error(await _error(exception_type, message))
    # e76591a: non-retryable, "fix the input or the template".
    assert not err.non_retryable and err.type not in NON_RETRYABLE_TYPES
    note = str(err)
    assert "fix the input or the template" not in note
    assert "registered under two GPU names" in note and "STORYLOOM_GPU_SHARING=shared" in note
    assert "STORYLOOM_IMAGE_WIDTH" in note


async def test_other_node_failures_stay_final() -> None:
    err = to_application_error(await _error("ValueError", "bad seed"))
    assert err.non_retryable and "fix the input or the template" in str(err)


async def test_a_render_beside_a_resident_llm_is_judged_retryable_over_real_sockets(
    tmp_path: Path,
) -> None:
    """The emulated shared card (`emulate all --shared-gpu`): the ComfyUI client's judgement."""
    async with gpu_fleet(tmp_path, 1, shared=True, time_scale=0.01) as fleet:
        async with httpx.AsyncClient(base_url=fleet.ollama.url, timeout=10.0) as http:
            (await http.post("/api/generate", json={"model": "llama3.2", "prompt": "Hi.",
                                                    "stream": False})).raise_for_status()
        pid = str(uuid.uuid4())
        async with ComfyClient(fleet.comfy[0].url) as client:
            await client.queue_prompt(txt2img_graph(7), pid)
            caught: ComfyExecutionError | None = None
            for _ in range(400):  # bounded: the emulated render fails within a second
                try:
                    if judge(await client.job_status(pid), pid, client.base_url).kind == "done":
                        break
                except ComfyExecutionError as exc:
                    caught = exc
                    break
                await asyncio.sleep(0.05)
    assert caught is not None and caught.exception_type == "torch.cuda.OutOfMemoryError"
    err = to_application_error(caught)
    assert not err.non_retryable and "registered under two GPU names" in str(err)


async def test_the_retry_of_an_out_of_memory_render_renders_it_once_the_gpu_is_free(
    tmp_path: Path,
) -> None:
    """e76591a: the retry found the failed job under the same prompt id and failed again
    without rendering, so retrying changed nothing. Now it submits the job again."""
    async with gpu_fleet(tmp_path, 1, shared=True, time_scale=0.01) as fleet:
        ollama = httpx.AsyncClient(base_url=fleet.ollama.url, timeout=10.0)
        async with ollama, ComfyClient(fleet.comfy[0].url, timeouts=FAST) as client:
            (await ollama.post("/api/generate", json={"model": "llama3.2", "prompt": "Hi.",
                                                      "stream": False})).raise_for_status()
            images = ImageActivities(client, WorkflowManager(), tmp_path / "media",
                                     heartbeat_every=0.1)
            inp = request()
            with pytest.raises(ApplicationError) as caught:
                await Beats().run(images, inp)
            assert caught.value.type == "ComfyOutOfMemory" and not caught.value.non_retryable
            # The scheduler's eviction: the LLM leaves the card; the engine retries.
            (await ollama.post("/api/generate", json={"model": "llama3.2",
                                                      "keep_alive": 0})).raise_for_status()
            await wait_until(lambda: _no_model(ollama), timeout=20, what="the LLM to unload")
            result = await Beats(attempt=2).run(images, inp)
    assert Path(result.image_path).is_file() and result.prompt_id == render_prompt_id(
        inp.workflow_id, inp.step)


async def _no_model(ollama: httpx.AsyncClient) -> bool:
    return not (await ollama.get("/api/ps")).json()["models"]
