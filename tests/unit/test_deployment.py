"""docker-compose.yml and the Dockerfile describe a deployment a user can bring up as it is.

No Docker engine runs here, so the file is validated by Debian's `docker-compose config`, which
parses, interpolates and schema-checks it without an engine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.common import SERVICE_ENV

ROOT = Path(__file__).resolve().parents[2]


def _compose(*args: str) -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        message = "docker-compose is missing: `apt-get install docker-compose` (./dev test does it in CI)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # The compose file's own defaults, not whatever service addresses this shell exports.
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV}
    done = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False, env=env,
    )
    assert done.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def test_compose_file_is_valid_and_gpu_services_sit_behind_a_profile() -> None:
    import yaml

    doc = yaml.safe_load(_compose("config"))
    services = doc["services"]
    assert set(services) >= {"postgres", "temporal", "temporal-setup", "temporal-ui", "worker"}
    for name in ("postgres", "temporal", "temporal-ui", "worker"):
        assert "profiles" not in services[name], f"{name} must start without a profile"
    for name in ("ollama", "comfyui"):
        assert services[name]["profiles"] == ["gpu"]


def test_gpu_profile_adds_ollama_and_comfyui_with_nvidia_reservations() -> None:
    import yaml

    text = _compose("--profile", "gpu", "config")
    doc = yaml.safe_load(text)
    for name in ("ollama", "comfyui"):
        devices = doc["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_worker_settings_point_at_the_compose_services() -> None:
    import yaml

    doc = yaml.safe_load(_compose("config"))
    env = doc["services"]["worker"]["environment"]
    assert env["STORYLOOM_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@postgres:5432/" in env["STORYLOOM_DATABASE_URL"]
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["OLLAMA_HOST"] == "http://ollama:11434"
    assert env["STORYLOOM_COMFYUI_URL"] == "http://comfyui:8188"
    setup = json.dumps(doc["services"]["temporal-setup"]["command"])
    assert "StoryId" in setup and "NodeId" in setup


def test_dockerfile_installs_the_package_and_runs_a_worker() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install" in text and 'ENTRYPOINT ["storyloom"]' in text
    for folder in ("activities", "workflows_temporal", "starter", "comfy_templates"):
        assert f"COPY {folder}" in text
