"""The storyloom command's own behaviour: exit codes, error paragraphs, log lines, dev server."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from activities.calllog import call_context, log_call
from starter.devserver import DevServerError, start_dev_server
from starter.logs import JsonFormatter
from starter.ports import port_in_use
from starter.scene_command import build_request, result_line
from starter.settings import Settings
from tests.fixtures.common import free_port
from workflows_temporal.contracts import ImageStatus, SceneResult

CLI = [sys.executable, "-m", "starter.cli"]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path), **env}
    return subprocess.run([*CLI, *args], check=False, env=full_env, capture_output=True,
                          text=True, timeout=30)


def test_scene_without_temporal_names_the_address_and_the_fix(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    run = _run(["scene", "A fox"], tmp_path, STORYLOOM_TEMPORAL_ADDRESS=address)
    assert run.returncode == 2
    assert address in run.stderr and "storyloom up" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_unknown_worker_role_is_bad_usage(tmp_path: Path) -> None:
    run = _run(["worker", "--role", "gpu"], tmp_path)
    assert run.returncode == 2
    assert "llm, image, db, all" in run.stderr


def test_call_log_fields_become_json_keys() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    calls = logging.getLogger("storyloom.calls")
    calls.addHandler(handler)
    calls.setLevel(logging.INFO)
    try:
        with call_context(workflow_id="scene-1", attempt=2):
            log_call("ollama", "POST", "http://x/api/generate", status=200, duration_s=0.5,
                     outcome="ok")
    finally:
        calls.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["service"] == "ollama" and line["status"] == 200
    assert line["workflow_id"] == "scene-1" and line["attempt"] == 2
    assert line["duration_ms"] == 500.0 and line["level"] == "info"


def test_request_takes_model_and_template_from_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, text_model="qwen3:4b", template="scene")
    req = build_request(settings, "A fox", model=None, template=None, seed=None)
    assert (req.model, req.template, req.seed) == ("qwen3:4b", "scene", None)
    assert build_request(settings, "A fox", model="llama3.2").model == "llama3.2"


def test_result_line_says_plainly_why_the_image_failed(tmp_path: Path) -> None:
    result = SceneResult(story_id="s1", node_id="n1", workflow_id="scene-x", title="The Fox",
                         image_status=ImageStatus.FAILED,
                         image_error="ComfyUI failed at node 3 (KSampler)")
    line = result_line(result, Settings(data_dir=tmp_path))
    assert "The Fox" in line and "n1" in line
    assert "image FAILED: ComfyUI failed at node 3 (KSampler)" in line


async def test_dev_server_refuses_a_port_held_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(DevServerError, match=f"port {port}.*not a Temporal server"):
            await start_dev_server(tmp_path, address=f"127.0.0.1:{port}", headless=True,
                                   deadline_s=5)


async def test_dev_server_starts_file_backed_and_is_reused(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = await start_dev_server(tmp_path, address=address, headless=True, deadline_s=20)
    try:
        assert (tmp_path / "temporal.db").exists() and not server.reused
        again = await start_dev_server(tmp_path, address=address, headless=True)
        assert again.reused and again.stop() is None  # a reused server is never stopped by us
    finally:
        server.stop()
    host, _, port = address.rpartition(":")
    assert not port_in_use(host, int(port))  # stopped, and the port is free again


def test_doctor_reports_each_missing_service_with_its_fix(tmp_path: Path) -> None:
    run = _run(["doctor"], tmp_path,
               STORYLOOM_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
               STORYLOOM_OLLAMA_URL=f"http://127.0.0.1:{free_port()}",
               STORYLOOM_COMFYUI_URL=f"http://127.0.0.1:{free_port()}")
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert any(line.startswith("FAIL temporal") for line in lines)
    assert any(line.startswith("ok   database") for line in lines)  # SQLite in the data dir
    assert any(line.startswith("FAIL ollama") for line in lines)
    assert any(line.startswith("FAIL comfyui") for line in lines)
    assert "storyloom up" in run.stdout and "--emulate" in run.stdout
