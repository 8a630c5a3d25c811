"""The node definitions the emulator serves and validates against (real 0.33.0 /object_info)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "FAKE_CHECKPOINTS",
    "IMAGE_EXTENSIONS",
    "hidden_inputs",
    "input_files",
    "node_classes",
    "object_info",
]

FAKE_CHECKPOINTS: tuple[str, ...] = (
    "v1-5-pruned-emaonly.safetensors",
    "sd_xl_base_1.0.safetensors",
)
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})

_DATA = Path(__file__).with_name("object_info_0_33_0.json")


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_DATA.read_text(encoding="utf-8"))
    return data


def node_classes() -> frozenset[str]:
    """Names of every node class the emulator knows."""
    return frozenset(_raw())


def hidden_inputs(class_type: str) -> dict[str, str]:
    """The hidden inputs of a class, name → kind (SaveImage: prompt → PROMPT, ...)."""
    node = _raw().get(class_type, {})
    hidden = node.get("input", {}).get("hidden", {}) if isinstance(node, dict) else {}
    return {str(k): str(v) for k, v in hidden.items()} if isinstance(hidden, dict) else {}


def input_files(input_dir: Path) -> list[str]:
    """Image files directly inside the input folder, sorted (what LoadImage's combo lists)."""
    if not input_dir.is_dir():
        return []
    return sorted(
        p.name for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def object_info(input_dir: Path, checkpoints: tuple[str, ...] | None = None) -> dict[str, Any]:
    """All node definitions, with combo lists filled from the models (``checkpoints``, default
    the fake ones) and the input folder."""
    info = copy.deepcopy(_raw())
    names = FAKE_CHECKPOINTS if checkpoints is None else checkpoints
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] = list(names)
    info["LoadImage"]["input"]["required"]["image"][0] = input_files(input_dir)
    return info
