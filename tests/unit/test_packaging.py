"""The project's metadata builds without deprecation warnings on current setuptools."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_string_that_the_required_setuptools_accepts() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())

    # A TOML table here prints ~45 lines of deprecation warnings on every install.
    assert isinstance(meta["project"]["license"], str)
    assert meta["project"]["license"] == "MIT"
    requires = " ".join(meta["build-system"]["requires"])
    minimum = re.search(r"setuptools>=(\d+)", requires)
    assert minimum and int(minimum.group(1)) >= 77, requires  # SPDX strings: setuptools 77+
