"""ComfyUI's ``execution_error`` is kilobytes (realcomfy findings 3d: a torch tensor repr per
image input, the whole graph as a Python repr, server paths, a traceback). What storyloom keeps
of it in workflow payloads and on the node is node id, class, exception type and the first line
of the message, bounded (ARCHITECTURE rule 3). Over real sockets against the emulator, which
sends the same bulk, and against a server answering one enormous line."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.failure.v1 import Failure
from temporalio.converter import DataConverter

from activities.comfyui.client import ComfyClient
from activities.comfyui.follow import judge
from activities.comfyui.models import ComfyTimeouts
from activities.errors import ComfyExecutionError, to_application_error
from emulators.comfyui.failure import SERVER_ROOT
from tests.fixtures.comfy_emulator import wait_job_status

FAST = ComfyTimeouts(connect=2.0, read=5.0, poll_interval=0.05, ws_silence=0.5)


def _history_bytes(exc: ComfyExecutionError) -> bytes:
    """The failure as the worker would send it to Temporal (what the history keeps)."""
    failure = Failure()
    converter = DataConverter.default
    converter.failure_converter.to_failure(to_application_error(exc), converter.payload_converter,
                                           failure)
    return failure.SerializeToString()


async def test_a_runtime_error_keeps_node_class_type_and_first_line_only(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                     "color": random.randrange(1, 1 << 24)}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0],
                                                    "filename_prefix": "../escape"}},
    }
    pid = str(uuid.uuid4())
    async with ComfyClient(comfy_emulator.url, timeouts=FAST) as client:
        async with client.watch() as watcher:
            await client.queue_prompt(graph, pid)
            with pytest.raises(ComfyExecutionError) as caught:
                async for _event in watcher.follow(pid):
                    pass
        async with httpx.AsyncClient(base_url=comfy_emulator.url) as http:
            job = await wait_job_status(http, pid, {"failed"})
    error = job["execution_error"]
    # The emulator sends the real bulk (e76591a: 'current_inputs' held short str() values).
    assert len(json.dumps(error)) > 2500, len(json.dumps(error))
    assert "tensor([[" in error["current_inputs"]["images"][0]
    assert "'class_type': 'SaveImage'" in error["current_inputs"]["prompt"][0]
    assert "extra_pnginfo" in error["current_inputs"]
    assert len(error["traceback"]) >= 5 and SERVER_ROOT in error["traceback"][0]
    assert "output_dir:" in error["exception_message"]  # the server's paths, on later lines
    exc = caught.value
    assert (exc.node_id, exc.node_type, exc.exception_type) == ("2", "SaveImage", "Exception")
    assert exc.details == {"node_id": "2", "node_type": "SaveImage", "exception_type": "Exception"}
    assert "Saving image outside the output folder is not allowed" in str(exc)
    recorded = _history_bytes(exc)
    for bulk in (b"tensor(", SERVER_ROOT.encode(), b"output_dir", b"extra_pnginfo",
                 str(tmp_path).encode()):
        assert bulk not in recorded, bulk


async def test_an_error_whose_first_line_is_enormous_is_cut(tmp_path: Path) -> None:
    """A custom node's ``f"{name} not in {os.listdir(folder)}"`` is one line of any length."""
    pid = str(uuid.uuid4())
    listing = ", ".join(f"'lora_{i:05d}.safetensors'" for i in range(2000))  # ~58 kB
    error = {"prompt_id": pid, "node_id": "7", "node_type": "LoraLoaderFancy",
             "exception_type": "ValueError",
             "exception_message": f"my_lora.safetensors not in [{listing}]\n",
             "traceback": ["  File \"/srv/ComfyUI/execution.py\", line 1\n"] * 6,
             "current_inputs": {"model": ["<tensor>" * 200]}, "executed": ["1"]}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"id": pid, "status": "failed", "outputs": {},
                                         "execution_error": error})

    async with ComfyClient("http://comfy.test", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ComfyExecutionError) as caught:
            judge(await client.job_status(pid), pid, client.base_url)
    message = to_application_error(caught.value).message
    # e76591a: the whole 58 kB line went into the message, the history and the node's error.
    assert len(message) < 700, len(message)
    assert "my_lora.safetensors not in ['lora_00000.safetensors'" in message
    assert len(_history_bytes(caught.value)) < 16_000
