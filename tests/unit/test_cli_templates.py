"""Templates that need a reference picture are internal variants: refused as --template or
STORYLOOM_TEMPLATE before anything starts, and never offered as a choice (issue 12 finding 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "starter.cli"]


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "STORYLOOM_DATA_DIR": str(tmp_path), "COLUMNS": "200", **env}
    return subprocess.run([*CLI, *args], check=False, env=full, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("args", "env", "source"), [
    (["scene", "A fox", "--template", "scene_with_reference"], {}, "--template"),
    (["story", "A fox", "--scenes", "2"], {"STORYLOOM_TEMPLATE": "scene_with_reference"},
     "STORYLOOM_TEMPLATE"),
    (["scene", "A fox"], {"STORYLOOM_TEMPLATE": "scene_with_reference"}, "STORYLOOM_TEMPLATE"),
    (["retry-image", "n_000000000000", "--template", "scene_with_reference"], {},
     "--template"),
])
def test_a_reference_variant_is_refused_before_anything_starts(
    tmp_path: Path, args: list[str], env: dict[str, str], source: str,
) -> None:
    refused = _run(args, tmp_path, **env)

    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line == (f"The ComfyUI template 'scene_with_reference' ({source}) is an internal "
                    "variant that needs reference_image, which storyloom fills itself when a "
                    "character has a reference picture; choose one of: probe, scene."), line
    assert not (tmp_path / "storyloom.db").exists()


def test_help_and_errors_offer_only_the_templates_a_user_may_choose(tmp_path: Path) -> None:
    for args in (["scene", "--help"], ["retry-image", "--help"]):
        shown = _run(args, tmp_path)
        assert shown.returncode == 0 and "probe, scene" in shown.stdout, shown.stdout
        assert "scene_with_reference" not in shown.stdout
    unknown = _run(["scene", "A fox", "--template", "nope"], tmp_path)
    assert unknown.returncode == 2
    assert "the templates are: probe, scene." in unknown.stderr, unknown.stderr
