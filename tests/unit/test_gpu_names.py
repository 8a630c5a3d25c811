"""GPU names become task queues (``storyloom-image-NAME``): only ``[A-Za-z0-9_.-]{1,40}``
(issue 13: ``--gpu "my gpu/1"`` gave the queue ``storyloom-image-my gpu/1``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _worker(tmp_path: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    storyloom = Path(sys.executable).parent / "storyloom"
    done = subprocess.run([str(storyloom), "worker", "--role", "image", *args],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                               "STORYLOOM_DATA_DIR": str(tmp_path / "data"),
                               "STORYLOOM_TEMPORAL_ADDRESS": "127.0.0.1:9", **env})
    return done.returncode, (done.stdout + done.stderr).strip()


@pytest.mark.parametrize("name", ["my gpu/1", "x" * 41, "gpü"])
def test_a_gpu_name_that_cannot_name_a_task_queue_is_refused(name: str, tmp_path: Path) -> None:
    # e76591a: the worker started on the task queue "storyloom-image-my gpu/1".
    for code, out in (_worker(tmp_path, ["--gpu", name], {}),
                      _worker(tmp_path, [], {"STORYLOOM_GPU": name})):
        assert code == 2, out
        assert repr(name) in out and "1 to 40 letters, digits" in out, out
        assert len(out.splitlines()) <= 3, out
