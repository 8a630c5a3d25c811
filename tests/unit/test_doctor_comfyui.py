"""`storyloom doctor` against a ComfyUI whose checkpoints are not the templates' default: it checks
the checkpoint and templates a render would really use, and names the real problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starter.doctor import Check, format_check
from starter.doctor_comfyui import checkpoint_names, comfyui_checks
from starter.settings import Settings

SDXL = "sd_xl_base_1.0.safetensors"


def settings_for(url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(comfyui_url=url, data_dir=tmp_path / "data", **kw)


def report(checks: list[Check]) -> str:
    return "\n".join(format_check(c) for c in checks)


async def test_a_configured_checkpoint_the_server_has_passes(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"checkpoints": [SDXL]})
    checks = await comfyui_checks(settings_for(
        comfy_emulator.url, tmp_path, checkpoint=SDXL, image_width=320, image_height=192))
    assert all(c.ok for c in checks), report(checks)
    text = report(checks)
    assert f"checkpoint {SDXL} present" in text and "320x192" in text


async def test_a_checkpoint_not_on_the_server_is_named_as_such_not_as_a_custom_node(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    comfy_emulator.set_faults({"checkpoints": [SDXL]})
    for configured in ("", "sd_xl_base_1.0.safetensor"):  # the template default; a typo
        checks = await comfyui_checks(settings_for(comfy_emulator.url, tmp_path,
                                                   checkpoint=configured))
        failed = [c for c in checks if not c.ok]
        wanted = configured or "v1-5-pruned-emaonly.safetensors"
        assert len(failed) == 1, report(checks)
        assert f"checkpoint {wanted} is not on the server" in failed[0].detail
        assert "STORYLOOM_CHECKPOINT" in failed[0].fix and SDXL in failed[0].fix
        assert "custom node" not in report(checks)


async def test_a_size_the_template_refuses_is_a_template_line(
    comfy_emulator: Any, tmp_path: Path
) -> None:
    for width in (99999, 4000):  # above the server's limit; above only the manifest's 2048
        checks = await comfyui_checks(settings_for(comfy_emulator.url, tmp_path,
                                                   image_width=width))
        failed = [c for c in checks if not c.ok]
        assert failed and all(c.name == "template" for c in failed), report(checks)
        assert str(width) in failed[0].detail and "STORYLOOM_IMAGE_WIDTH" in failed[0].fix


def test_checkpoint_names_reads_both_combo_forms() -> None:
    legacy = {"input": {"required": {"ckpt_name": [["a.safetensors"], {}]}}}
    newer = {"input": {"required": {"ckpt_name": ["COMBO", {"options": ["b.ckpt"]}]}}}
    assert checkpoint_names(legacy) == ["a.safetensors"]
    assert checkpoint_names(newer) == ["b.ckpt"]
