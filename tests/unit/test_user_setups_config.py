"""Issue 11, a fresh user's configuration mistakes: addresses written the ways Ollama, ComfyUI
and Temporal users write them, misspelled STORYLOOM_ variables, and the no-worker message at
80 columns. Each is what a user sees (a setting's value, a doctor line, a CLI message)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from starter.pollers import queues_needed, unserved_message
from starter.settings import Settings, normalize_ollama_url
from tests.fixtures.common import free_port


def test_ollama_host_without_a_host_means_127_0_0_1() -> None:
    # Ollama reads OLLAMA_HOST=:21434 as 127.0.0.1:21434 (e76591a: "http://:21434").
    assert normalize_ollama_url(":21434") == "http://127.0.0.1:21434"
    assert normalize_ollama_url("http://:21434") == "http://127.0.0.1:21434"


@pytest.mark.parametrize(("given", "url"), [
    ("gpu-box:8188", "http://gpu-box:8188"),
    ("gpu-box", "http://gpu-box:8188"),
    ("http://127.0.0.1:8188/", "http://127.0.0.1:8188"),
    ("0.0.0.0:8190", "http://127.0.0.1:8190"),
])
def test_a_comfyui_url_without_a_scheme_is_accepted_like_ollamas(given: str, url: str) -> None:
    assert Settings(comfyui_url=given).comfyui_url == url  # e76591a: kept as given


def test_a_temporal_address_without_a_port_is_refused_naming_the_port(tmp_path: Path) -> None:
    env = {**os.environ, "STORYLOOM_TEMPORAL_ADDRESS": "127.0.0.1",
           "STORYLOOM_DATA_DIR": str(tmp_path)}
    env.pop("TEMPORAL_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "starter.cli", "list"], env=env, check=False,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "STORYLOOM_TEMPORAL_ADDRESS" in run.stderr and "no port" in run.stderr, run.stderr
    assert "127.0.0.1:7233" in run.stderr
    assert "STORYLOOM_STORYLOOM" not in run.stderr


def test_doctor_names_a_misspelled_variable_and_a_url_with_api(tmp_path: Path) -> None:
    dead = free_port()
    env = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path), "STORYLOOM_CHECKPIONT": "x",
           "OLLAMA_HOST": f"127.0.0.1:{dead}/api", "STORYLOOM_TEMPORAL_ADDRESS":
           f"127.0.0.1:{free_port()}", "STORYLOOM_COMFYUI_URL": f"127.0.0.1:{free_port()}"}
    for name in ("STORYLOOM_OLLAMA_URL", "TEMPORAL_ADDRESS", "STORYLOOM_DATABASE_URL"):
        env.pop(name, None)
    run = subprocess.run([sys.executable, "-m", "starter.cli", "doctor"], env=env, check=False,
                         capture_output=True, text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    # e76591a: the misspelling was silently ignored, and the fix said "start Ollama".
    assert "STORYLOOM_CHECKPIONT" in out and "rename it STORYLOOM_CHECKPOINT" in out, out
    assert "remove /api" in out, out


def test_the_no_worker_message_never_breaks_a_command_at_80_columns() -> None:
    from starter.pollers import for_terminal

    message = unserved_message(queues_needed(gpu=""), "scene")
    wrapped = for_terminal(message, io.StringIO(), width=80)
    lines = wrapped.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert any("`storyloom worker --role all`" in line for line in lines), lines
    assert " ".join(lines) == message
    assert for_terminal(message, io.StringIO()) == message  # a pipe: one line, as before


def test_retry_image_settings_flags_win_then_the_nodes_record_then_the_terminal() -> None:
    from starter.retry_command import choose_settings

    terminal = Settings(text_model="qwen3", checkpoint="sd_xl_base_1.0.safetensors",
                        image_width=640)
    recorded = {"template": "scene", "model": "llama3.2", "checkpoint": None,
                "image_width": 256}
    chosen, notes = choose_settings(terminal, recorded, {"model": "mistral"})
    assert chosen == {"template": "scene", "model": "mistral", "checkpoint": None,
                      "image_width": 256, "image_height": 512}
    # The terminal's checkpoint and width are named with the option that would use them.
    assert any("--checkpoint sd_xl_base_1.0.safetensors" in n for n in notes), notes
    assert any("--width 640" in n for n in notes), notes
    assert not any("--model" in n for n in notes), notes  # given: nothing to say
    chosen, _ = choose_settings(terminal, recorded, {})
    assert chosen["model"] == "llama3.2"
