"""A ComfyUI job that fails out of GPU memory is retried, and its note names the likely cause
(issue 13: one card under two GPU names; an Ollama on the card outside the scheduler)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from activities.comfyui.client import ComfyClient
from activities.comfyui.follow import judge
from activities.errors import ComfyExecutionError, to_application_error
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
