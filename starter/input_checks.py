"""What a user types, checked before anything starts: one sentence per mistake, exit 2.

The limits are the constants of ``workflows_temporal.contracts`` (the same ones the workflow
inputs enforce), so a request the CLI accepts is one the workflow accepts. Checks that need a
service (the story store, Ollama) live in ``starter.preflight``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from activities.templates import DEFAULT_TEMPLATES_DIR
from starter.outcome import EXIT_USAGE, CliFailure
from workflows_temporal.contracts import (
    MAX_DIRECTION_CHARS,
    MAX_LOOK_CHARS,
    MAX_SEED,
    MAX_STORY_SCENES,
    MAX_STYLE_CHARS,
)

__all__ = [
    "check_direction",
    "check_image_size",
    "check_look",
    "check_scenes",
    "check_seed",
    "check_style",
    "check_template",
    "explain_invalid",
    "explain_settings",
    "template_names",
]

# How a request field is named on the command line (for the rare error pydantic still finds).
_FIELD_NAMES = {
    "direction": "the direction", "directions": "--scenes", "style": "--style", "seed": "--seed",
    "model": "--model (or STORYLOOM_TEXT_MODEL)", "template": "--template (or STORYLOOM_TEMPLATE)",
    "context_budget_tokens": "STORYLOOM_CONTEXT_BUDGET_TOKENS", "embed_model":
    "STORYLOOM_EMBED_MODEL", "gpu_sharing": "STORYLOOM_GPU_SHARING",
    "image_width": "STORYLOOM_IMAGE_WIDTH", "image_height": "STORYLOOM_IMAGE_HEIGHT",
    "checkpoint": "STORYLOOM_CHECKPOINT", "fallback_models": "STORYLOOM_FALLBACK_MODELS",
}


# What the render fills for every scene (activities.comfyui.activities ``_prepare``); a template
# that requires anything else (a ``reference_image``) is an internal variant storyloom picks.
_FILLED_FOR_EVERY_SCENE = frozenset({"positive", "negative", "seed", "width", "height",
                                     "checkpoint", "filename_prefix"})


def _all_templates(templates_dir: Path) -> list[str]:
    return sorted(p.stem for p in templates_dir.glob("*.json")
                  if not p.name.endswith(".manifest.json"))


def _internal_needs(name: str, templates_dir: Path) -> list[str]:
    """The required parameters of ``name`` a plain scene does not fill (empty: selectable)."""
    from activities.templates import WorkflowManager

    manifest = WorkflowManager(templates_dir).manifest(name)
    return sorted(p.name for p in manifest.parameters.values()
                  if p.required and p.default is None and p.name not in _FILLED_FOR_EVERY_SCENE)


def template_names(templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> list[str]:
    """The ComfyUI templates a user may choose (``--template``/STORYLOOM_TEMPLATE), sorted:
    those shipped in ``comfy_templates/`` whose required parameters every scene fills. The
    variants that need a reference picture are left out: storyloom picks them itself."""
    return [n for n in _all_templates(templates_dir) if not _internal_needs(n, templates_dir)]


def _fail(message: str) -> CliFailure:
    return CliFailure(message, EXIT_USAGE)


def check_direction(text: str, *, what: str = "direction") -> str:
    """``text`` stripped; CliFailure (exit 2) when it is blank or over MAX_DIRECTION_CHARS."""
    cleaned = text.strip()
    if not cleaned:
        example = ('storyloom story "A lighthouse keeper befriends a fox" --scenes 3'
                   if what == "premise" else 'storyloom scene "A lighthouse keeper finds a fox"')
        raise _fail(f"The {what} is empty: say what happens, for example `{example}`.")
    if len(cleaned) > MAX_DIRECTION_CHARS:
        raise _fail(f"The {what} is {len(cleaned):,} characters long; the limit is "
                      f"{MAX_DIRECTION_CHARS:,} characters: shorten it (details can come in "
                      "later scenes).")
    return cleaned


def check_style(style: str | None) -> str | None:
    if style is not None and len(style.strip()) > MAX_STYLE_CHARS:
        raise _fail(f"--style is {len(style.strip()):,} characters long; the limit is "
                    f"{MAX_STYLE_CHARS} characters: a few words such as \"watercolour, dusk\".")
    return style.strip() if style is not None else None


def check_seed(seed: int | None) -> int | None:
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise _fail(f"--seed {seed} is out of range: a seed is a whole number from 0 to "
                    f"{MAX_SEED} (2**64-1, ComfyUI's range).")
    return seed


def check_scenes(scenes: int) -> int:
    if not 1 <= scenes <= MAX_STORY_SCENES:
        raise _fail(f"--scenes {scenes} is out of range: a story run writes 1 to "
                    f"{MAX_STORY_SCENES:,} scenes (continue it later with --continue).")
    return scenes


def check_look(look: str) -> str:
    cleaned = look.strip()
    if not cleaned:
        raise _fail("The look is empty: describe the character, for example "
                    "\"a red fox with a white-tipped tail\".")
    if len(cleaned) > MAX_LOOK_CHARS:
        raise _fail(f"The look is {len(cleaned):,} characters long; the limit is "
                    f"{MAX_LOOK_CHARS:,} characters (it is repeated in every image prompt).")
    return cleaned


def check_template(name: str, *, source: str = "--template") -> str:
    """``name`` when it is a template a user may choose; CliFailure (exit 2, one sentence)
    naming the choices otherwise, and saying why for an internal variant."""
    names = template_names()
    if name in _all_templates(DEFAULT_TEMPLATES_DIR) and name not in names:
        needs = ", ".join(_internal_needs(name, DEFAULT_TEMPLATES_DIR))
        raise _fail(f"The ComfyUI template {name!r} ({source}) is an internal variant that "
                    f"needs {needs}, which storyloom fills itself when a character has a "
                    f"reference picture; choose one of: {', '.join(names)}.")
    if name not in names:
        raise _fail(f"There is no ComfyUI template {name!r} ({source}); the templates are: "
                    f"{', '.join(names)}.")
    return name


def check_image_size(template: str, width: int | None, height: int | None, *,
                     sources: tuple[str, str] = ("STORYLOOM_IMAGE_WIDTH",
                                                 "STORYLOOM_IMAGE_HEIGHT")) -> None:
    """CliFailure (exit 2) when ``width``/``height`` (pixels; None: the template's default) are
    outside ``template``'s manifest range or off its step (EmptyLatentImage rounds down to a
    multiple of 8, so 513 would silently come out 512). ``sources`` name the setting or flag."""
    from activities.templates import WorkflowManager

    manifest = WorkflowManager().manifest(template)
    for name, value, source in (("width", width, sources[0]), ("height", height, sources[1])):
        p = manifest.parameters.get(name)
        if value is None or p is None:
            continue
        low, high, step = int(p.min or 1), int(p.max or value), int(p.step or 1)
        if low <= value <= high and value % step == 0:
            continue
        allowed = f"{low} to {high}" + (f" in steps of {step}" if step > 1 else "")
        near = ""
        if step > 1 and low <= value <= high:
            down = value - value % step
            near = f" (e.g. {max(down, low)} or {min(down + step, high)})"
        raise _fail(f"{source}={value} is not a {name} the {template!r} template can render: "
                    f"it takes {allowed} pixels{near}.")


def explain_settings(exc: ValidationError) -> CliFailure:
    """One sentence for an environment pydantic-settings refused: each variable, what it had,
    and what it needs."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        value = error.get("input")
        shown = f" (it is {value!r})" if isinstance(value, str | int | float) else ""
        # A field read through an alias (TEMPORAL_ADDRESS, OLLAMA_HOST...) is named by it.
        variable = field if field.isupper() else f"STORYLOOM_{field.upper()}"
        parts.append(f"{variable}{shown}: {error['msg'].lower()}")
    return _fail(f"The configuration is invalid: {'; '.join(parts)}. Fix or unset the "
                 "variable.")


def explain_invalid(exc: ValidationError, what: str) -> CliFailure:
    """One sentence for a request pydantic refused (a check above should have caught it)."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else what
        parts.append(f"{_FIELD_NAMES.get(field, field)}: {error['msg'].lower()}")
    return _fail(f"The {what} is invalid: {'; '.join(parts)}.")
