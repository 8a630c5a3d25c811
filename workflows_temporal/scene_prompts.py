"""Pure text helpers of SceneWorkflow: image prompt, reference pick, seed, summaries.

Everything here is deterministic (no clock, randomness, env or I/O), so the workflow may call
it during replay.
"""

from __future__ import annotations

import hashlib
import re

from workflows_temporal.contracts import CharacterLook, SceneCast

__all__ = [
    "REFERENCE_TEMPLATE",
    "base_template",
    "build_image_prompt",
    "continuation",
    "derive_seed",
    "first_words",
    "is_continuation",
    "one_line",
    "pick_reference",
    "reference_variant",
    "squeezed",
    "without_scene_number",
]

# The template that conditions the render on a character's reference picture.
REFERENCE_TEMPLATE = "scene_with_reference"
# Which template has a reference variant: a scene of a character with a picture renders with
# the variant; a template without one (probe) renders as configured.
REFERENCE_VARIANTS = {"scene": REFERENCE_TEMPLATE}
MAX_PROMPT_CHARS = 2000  # ComfyUI's CLIP truncates long prompts anyway; keep history small


# A story's later scenes are told to continue its premise; the scene number keeps each
# direction (and so each LLM prompt) distinct. These directions are instructions, not captions.
_CONTINUATION = re.compile(r"^(Scene \d+: )?continue the story of ", re.IGNORECASE)
_SCENE_NUMBER = re.compile(r"^Scene \d+:\s*", re.IGNORECASE)


def reference_variant(template: str) -> str | None:
    """The template that renders ``template``'s scenes with a reference picture, or None."""
    return REFERENCE_VARIANTS.get(template)


def base_template(template: str) -> str:
    """The template whose reference variant ``template`` is (itself when it is none's)."""
    return next((base for base, ref in REFERENCE_VARIANTS.items() if ref == template), template)


def continuation(scene: int, premise: str) -> str:
    """The direction of scene ``scene`` (1-based) of a story that goes on from ``premise``."""
    return f"Scene {scene}: continue the story of {premise}"


def is_continuation(direction: str) -> bool:
    """True for a direction made by ``continuation`` (the user wrote no direction)."""
    return bool(_CONTINUATION.match(direction))


def without_scene_number(direction: str) -> str:
    """``"Scene 2: continue …"`` → ``"continue …"`` (for labels that carry the number)."""
    return _SCENE_NUMBER.sub("", direction, count=1)


def derive_seed(workflow_id: str) -> int:
    """A stable 32-bit seed from the workflow id: the first 4 bytes of its sha256."""
    return int.from_bytes(hashlib.sha256(workflow_id.encode("utf-8")).digest()[:4], "big")


def first_words(text: str, count: int = 6, limit: int = 60) -> str:
    """The first ``count`` words of ``text`` on one line, cut at ``limit`` characters."""
    words = text.split()
    short = " ".join(words[:count])
    if len(words) > count:
        short += "…"
    return short if len(short) <= limit else short[: limit - 1] + "…"


def one_line(message: str, limit: int = 300) -> str:
    """``message`` squeezed onto one line (whitespace collapsed), cut at ``limit`` characters."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def squeezed(message: str, limit: int = 400) -> str:
    """``message`` on one line, at most ``limit`` characters, shortened in the middle: its
    start (what failed) and its end (the fix hint) are kept."""
    flat = " ".join(message.split())
    if len(flat) <= limit:
        return flat
    head = limit * 2 // 5
    return flat[:head].rstrip() + " … " + flat[-(limit - head - 3):].lstrip()


def build_image_prompt(cast: SceneCast, looks: list[CharacterLook], style: str) -> str:
    """The positive prompt: the scene's visual prompt, each present character's canonical look
    (the stored look, as returned by upsert_characters, wins over the fresh extraction), then
    the requested style. Empty parts are left out."""
    canonical = {look.name: look.look for look in looks}
    parts: list[str] = []
    if cast.visual_prompt.strip():
        parts.append(cast.visual_prompt.strip())
    elif cast.setting.strip():
        parts.append(cast.setting.strip())
    seen: set[str] = set()
    for name in [c.name for c in cast.characters] + list(canonical):
        if name in seen:
            continue
        seen.add(name)
        look = canonical.get(name) or next((c.look for c in cast.characters if c.name == name), "")
        if look.strip():
            parts.append(f"{name}: {look.strip()}")
    if style.strip():
        parts.append(style.strip())
    return one_line(", ".join(parts), MAX_PROMPT_CHARS)


def pick_reference(looks: list[CharacterLook]) -> CharacterLook | None:
    """The first present character with a reference picture, or None."""
    return next((look for look in looks if look.reference_image), None)
