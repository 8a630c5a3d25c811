"""`storyloom doctor`, ComfyUI part: the server, the templates in use, the checkpoint in use.

The templates checked are the ones a scene renders with (``STORYLOOM_TEMPLATE`` and its
reference variant, if it has one), filled with the configured image settings (``STORYLOOM_CHECKPOINT``,
``STORYLOOM_IMAGE_WIDTH``/``HEIGHT``), against the server's ``/object_info/<Class>``. Each kind
of problem gets its own fix: a node class the server lacks (a custom node to install), a
checkpoint file the server does not have (a model to add, or a setting to change), and any
other input the server refuses (the template or the size settings).
"""

from __future__ import annotations

from typing import Any

from activities.comfyui.graph_check import check_node
from activities.errors import TemplateError
from activities.templates import Parameter, WorkflowManager
from starter.clients import comfy_client
from starter.doctor import Check
from starter.settings import Settings
from workflows_temporal.scene_prompts import reference_variant

__all__ = ["checkpoint_names", "comfyui_checks", "missing_checkpoint"]


def checkpoint_names(definition: dict[str, Any]) -> list[str]:
    """The ``ckpt_name`` choices of a CheckpointLoaderSimple definition, in either combo form
    (``[[names], {}]`` or ``["COMBO", {"options": [names]}]``)."""
    spec = definition.get("input", {}).get("required", {}).get("ckpt_name") or [[]]
    kind = spec[0]
    if isinstance(kind, list):
        return [str(n) for n in kind]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return [str(n) for n in options.get("options", [])]


def _sample_params(parameters: dict[str, Parameter], values: dict[str, Any]) -> dict[str, Any]:
    """The configured values plus a stand-in for each value filled per render (prompt text,
    reference image), so the manifest can check the configured ones."""
    params = {k: v for k, v in values.items() if k in parameters and v is not None}
    for pname, param in parameters.items():
        if param.required and param.default is None and pname not in params:
            params[pname] = {"int": int(param.min or 0), "float": float(param.min or 0)}.get(
                param.type, param.choices[0] if param.choices else "doctor")
    return params


def missing_checkpoint(checkpoint: str, names: list[str], *,
                       setting: str = "STORYLOOM_CHECKPOINT") -> str:
    """What to do about ``checkpoint`` missing from a server that has ``names``."""
    if not names:
        return (f"the server has no checkpoints: put one (e.g. {checkpoint}) in ComfyUI's "
                f"models/checkpoints, then set {setting} to its file name")
    return (f"set {setting} to one of the server's checkpoints: {', '.join(names)} (or put "
            f"{checkpoint} into ComfyUI's models/checkpoints)")


def _in_use(settings: Settings, manager: WorkflowManager) -> list[str]:
    """The configured template and its reference variant (scene -> scene_with_reference), if
    it has one: a template without one (probe) renders every scene itself."""
    names = [settings.template]
    variant = reference_variant(settings.template)
    if variant is not None and variant in manager.names():
        names.append(variant)
    return names


async def _template(
    client: Any, manager: WorkflowManager, settings: Settings, name: str
) -> tuple[list[Check], str | None]:
    """The template's lines, and the checkpoint it would load (None if it sets none)."""
    try:
        manifest = manager.manifest(name)
    except Exception as exc:  # noqa: BLE001 - an unknown STORYLOOM_TEMPLATE is a FAIL line
        return [Check("template", False, str(exc), "set STORYLOOM_TEMPLATE to one of: "
                      + ", ".join(manager.names()))], None
    values = {"checkpoint": settings.checkpoint or None, "width": settings.image_width,
              "height": settings.image_height}
    try:  # the manifest's own limits (a render would refuse these before submitting)
        manager.render(name, _sample_params(manifest.parameters, values))
    except TemplateError as exc:
        return [Check("template", False, f"{name}: {exc}",
                      "set STORYLOOM_IMAGE_WIDTH/HEIGHT or STORYLOOM_CHECKPOINT within the "
                      "template's limits")], None
    graph = manager.graph(name)
    skip: set[tuple[str, str]] = set()
    checkpoint: str | None = None
    for pname, param in manifest.parameters.items():
        if values.get(pname) is not None:
            graph[param.node]["inputs"][param.input] = values[pname]
        if pname == "checkpoint":  # reported by its own line
            skip.add((param.node, param.input))
            checkpoint = str(graph[param.node]["inputs"][param.input])
        elif param.required and param.default is None:
            skip.add((param.node, param.input))  # filled per render
    classes = sorted({str(node.get("class_type")) for node in graph.values()})
    definitions = {c: d for c in classes if (d := await client.object_info(c))}
    missing = [c for c in classes if c not in definitions]
    if missing:
        return [Check("template", False,
                      f"{name}: ComfyUI has no node class {', '.join(missing)}",
                      f"install the custom node(s) providing {', '.join(missing)} in ComfyUI, "
                      "or choose another STORYLOOM_TEMPLATE")], checkpoint
    problems = [p for node_id, node in graph.items()
                for p in check_node(str(node_id), node, graph, definitions, skip)]
    if problems:
        return [Check("template", False, f"{name}: {'; '.join(problems)}",
                      "fix the template in comfy_templates/ or the STORYLOOM_IMAGE_WIDTH/HEIGHT "
                      "settings")], checkpoint
    size = f"{settings.image_width}x{settings.image_height}"
    return [Check("template", True, f"{name}: nodes and inputs match ({size})")], checkpoint


async def _checkpoint(client: Any, checkpoint: str, templates: list[str]) -> Check:
    names = checkpoint_names(await client.object_info("CheckpointLoaderSimple"))
    used_by = ", ".join(templates)
    if checkpoint in names:
        return Check("comfyui", True, f"checkpoint {checkpoint} present (used by {used_by})")
    present = ", ".join(names) or "none"
    return Check("comfyui", False,
                 f"checkpoint {checkpoint} is not on the server (used by {used_by}); "
                 f"its checkpoints: {present}", missing_checkpoint(checkpoint, names))


async def comfyui_checks(settings: Settings) -> list[Check]:
    """The ComfyUI lines of the report; never raises."""
    client = comfy_client(settings)
    try:
        try:
            stats = await client.system_stats()
        except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
            return [Check("comfyui", False, f"{settings.comfyui_url}: {exc}",
                          "start ComfyUI (`python main.py --listen`), set STORYLOOM_COMFYUI_URL, "
                          "or use `storyloom up --emulate`")]
        version = stats.get("system", {}).get("comfyui_version", "unknown")
        checks = [Check("comfyui", True, f"{settings.comfyui_url}, version {version}")]
        manager = WorkflowManager()
        by_checkpoint: dict[str, list[str]] = {}
        for name in _in_use(settings, manager):
            try:
                lines, checkpoint = await _template(client, manager, settings, name)
            except Exception as exc:  # noqa: BLE001 - any failure is a FAIL line
                lines, checkpoint = [Check("template", False, f"{name}: {exc}",
                                           "see the log")], None
            checks += lines
            if checkpoint is not None:
                by_checkpoint.setdefault(checkpoint, []).append(name)
        for checkpoint, templates in by_checkpoint.items():
            checks.append(await _checkpoint(client, checkpoint, templates))
        return checks
    finally:
        await client.aclose()
