"""The WorkflowManager: load ComfyUI API-format templates with their manifests, check, and fill.

A template is ``<name>.json`` (API-format graph) plus ``<name>.manifest.json``::

    {"output_node": "9",
     "parameters": {"seed": {"node": "3", "input": "seed", "type": "int", "min": 0,
                             "max": 18446744073709551615, "default": 0},
                    "positive": {"node": "6", "input": "text", "type": "string", "required": true},
                    "sampler": {"node": "3", "input": "sampler_name", "type": "combo",
                                "choices": ["euler", ...], "default": "euler"}}}

Types: int, float, string (optional ``pattern``), combo (``choices``). Filling sets inputs on a
deep copy, structurally; text never goes through string substitution. Every problem is a
TemplateError (final) naming the template, the parameter and the node.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activities.comfyui.graph_check import check_graph
from activities.errors import TemplateError

if TYPE_CHECKING:
    from activities.comfyui.client import ComfyClient

__all__ = [
    "DEFAULT_TEMPLATES_DIR", "Manifest", "Parameter", "WorkflowManager", "check_graph",
    "template_error",
]

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "comfy_templates"
_TYPES = {"int", "float", "string", "combo"}


@dataclass(frozen=True)
class Parameter:
    """One fillable input: which node and input it sets, its type and limits."""

    name: str
    node: str
    input: str
    type: str
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    description: str = ""
    step: int | None = None  # an int the node rounds down to a multiple of (EmptyLatentImage: 8)


@dataclass(frozen=True)
class Manifest:
    name: str
    output_node: str
    parameters: dict[str, Parameter] = field(default_factory=dict)
    description: str = ""


def template_error(
    template: str, message: str, *, parameter: str = "", node: str = ""
) -> TemplateError:
    """A TemplateError whose ``where`` and ``details`` name template, parameter and node."""
    where = f"template {template}" + (f" parameter {parameter}" if parameter else "") + (
        f" node {node}" if node else "")
    return TemplateError(
        message, service="templates", where=where,
        hint="Fix the parameter value, or the template and its manifest in comfy_templates/",
        details={"template": template, "parameter": parameter, "node": node},
    )


def _checked_value(template: str, p: Parameter, value: Any) -> Any:
    """The value to put into the graph, or TemplateError for a wrong type or range."""
    def bad(why: str) -> TemplateError:
        return template_error(template, f"parameter {p.name!r} (node {p.node} input {p.input}) {why}",
                     parameter=p.name, node=p.node)

    if p.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"must be an integer, got {type(value).__name__} {value!r}")
    elif p.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
    elif not isinstance(value, str):
        raise bad(f"must be a string, got {type(value).__name__} {value!r}")
    if p.min is not None and value < p.min:
        raise bad(f"is {value}, below the minimum {p.min:g}")
    if p.max is not None and value > p.max:
        raise bad(f"is {value}, above the maximum {p.max:g}")
    if p.type == "combo" and value not in p.choices:
        raise bad(f"is {value!r}, not one of {', '.join(p.choices[:12])}")
    if p.pattern is not None and not re.fullmatch(p.pattern, value):
        raise bad(f"{value!r} does not match {p.pattern}")
    return value


def _check_links(template: str, graph: dict[str, Any]) -> None:
    for node_id, node in graph.items():
        for input_name, value in node.get("inputs", {}).items():
            if _is_link(value) and str(value[0]) not in graph:
                raise template_error(template, f"node {node_id} input {input_name} links to missing node "
                            f"{value[0]}", parameter=input_name, node=str(node_id))


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


class WorkflowManager:
    """Loads every ``*.json`` template with its manifest from ``templates_dir`` at construction.

    ``render`` is pure and idempotent. Raises TemplateError (final) for an unknown template,
    a broken template, unknown/missing/mistyped/out-of-range parameters and dangling links.
    """

    def __init__(self, templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> None:
        self.templates_dir = templates_dir
        self._graphs: dict[str, dict[str, Any]] = {}
        self._manifests: dict[str, Manifest] = {}
        for path in sorted(templates_dir.glob("*.json")):
            if not path.name.endswith(".manifest.json"):
                self._load(path)

    def _load(self, path: Path) -> None:
        name = path.stem
        manifest_path = path.with_name(f"{name}.manifest.json")
        try:
            graph = json.loads(path.read_text())
            raw = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise template_error(name, f"cannot read {path.name} and its manifest: {exc}") from exc
        params: dict[str, Parameter] = {}
        for pname, spec in raw.get("parameters", {}).items():
            p = Parameter(
                name=pname, node=str(spec["node"]), input=str(spec["input"]), type=spec["type"],
                required=bool(spec.get("required", False)), default=spec.get("default"),
                min=spec.get("min"), max=spec.get("max"),
                choices=tuple(spec.get("choices", ())), pattern=spec.get("pattern"),
                description=spec.get("description", ""), step=spec.get("step"),
            )
            if p.type not in _TYPES:
                raise template_error(name, f"unknown type {p.type!r}", parameter=pname, node=p.node)
            if p.node not in graph or p.input not in graph[p.node].get("inputs", {}):
                raise template_error(name, f"parameter {pname!r} targets node {p.node} input {p.input}, "
                            "which the graph does not have", parameter=pname, node=p.node)
            if p.default is not None:
                _checked_value(name, p, p.default)
            elif not p.required:
                raise template_error(name, f"optional parameter {pname!r} needs a default",
                            parameter=pname, node=p.node)
            params[pname] = p
        output_node = str(raw.get("output_node", ""))
        if output_node not in graph:
            raise template_error(name, f"output_node {output_node!r} is not in the graph", node=output_node)
        _check_links(name, graph)
        self._graphs[name] = graph
        self._manifests[name] = Manifest(name, output_node, params, raw.get("description", ""))

    def names(self) -> list[str]:
        return sorted(self._graphs)

    def manifest(self, name: str) -> Manifest:
        if name not in self._manifests:
            raise template_error(name, f"no template named {name!r}; known: {', '.join(self.names())}")
        return self._manifests[name]

    def graph(self, name: str) -> dict[str, Any]:
        """A deep copy of the unfilled graph."""
        self.manifest(name)
        return copy.deepcopy(self._graphs[name])

    def render(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """The filled graph (a deep copy): each parameter, or its default, set on its input."""
        manifest = self.manifest(name)
        unknown = sorted(set(params) - set(manifest.parameters))
        if unknown:
            raise template_error(name, f"unknown parameter(s) {', '.join(unknown)}; the template takes "
                        f"{', '.join(sorted(manifest.parameters))}", parameter=unknown[0])
        graph = copy.deepcopy(self._graphs[name])
        for p in manifest.parameters.values():
            if p.name in params and params[p.name] is not None:
                value = _checked_value(name, p, params[p.name])
            elif p.required:
                raise template_error(name, f"required parameter {p.name!r} (node {p.node} input "
                            f"{p.input}) is missing", parameter=p.name, node=p.node)
            else:
                value = p.default
            graph[p.node]["inputs"][p.input] = value
        _check_links(name, graph)
        return graph

    def check_against_definitions(
        self, name: str, definitions: dict[str, Any], *, check_files: bool = True
    ) -> list[str]:
        """Problems of template ``name`` against node definitions (``/object_info`` shape).

        Values filled per render (required parameters without default) are not checked against
        the server's lists; with ``check_files=False`` neither are string parameters bound to
        server file lists (checkpoints), for definitions taken from a machine without models.
        """
        manifest = self.manifest(name)
        skip = {(p.node, p.input) for p in manifest.parameters.values()
                if (p.required and p.default is None) or (not check_files and p.type == "string")}
        return [f"template {name}: {problem}"
                for problem in check_graph(self._graphs[name], definitions, skip_values=skip)]

    async def check_against_server(self, client: ComfyClient, name: str) -> list[str]:
        """Problems of template ``name`` against the server's ``/object_info/<Class>`` answers
        (classes missing, inputs unknown or missing, values out of range, checkpoint absent)."""
        classes = {node["class_type"] for node in self._graphs[self.manifest(name).name].values()}
        definitions = {c: d for c in sorted(classes) if (d := await client.object_info(c))}
        return self.check_against_definitions(name, definitions, check_files=True)

