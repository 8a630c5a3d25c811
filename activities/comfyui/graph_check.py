"""Checking an API-format graph against ComfyUI node definitions (``/object_info`` shape).

Pure: no I/O. Finds what ``POST /prompt`` would reject before a render is attempted: unknown
classes, unknown or missing inputs, links to missing nodes or of the wrong type, literal values
of the wrong type, out of range or not in a combo list.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

__all__ = ["check_graph", "check_node"]

_LITERAL_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def check_graph(
    graph: dict[str, Any], definitions: dict[str, Any],
    *, skip_values: AbstractSet[tuple[str, str]] = frozenset(),
) -> list[str]:
    """All problems of ``graph``; ``skip_values`` lists (node, input) whose value is not checked
    against combo lists (values filled in per render)."""
    problems: list[str] = []
    for node_id, node in graph.items():
        problems += check_node(str(node_id), node, graph, definitions, skip_values)
    return problems


def check_node(
    node_id: str, node: dict[str, Any], graph: dict[str, Any], definitions: dict[str, Any],
    skip_values: AbstractSet[tuple[str, str]],
) -> list[str]:
    """The problems of one node, each naming node id, class and input."""
    cls = node.get("class_type")
    definition = definitions.get(cls) if isinstance(cls, str) else None
    if not definition:
        return [f"node {node_id}: class {cls!r} is not known to the server"]
    spec_input = definition.get("input", {})
    required = spec_input.get("required", {})
    known = {**spec_input.get("optional", {}), **required}
    inputs = node.get("inputs", {})
    problems = [f"node {node_id} ({cls}): required input {name!r} is missing"
                for name in required if name not in inputs]
    for name, value in inputs.items():
        where = f"node {node_id} ({cls}) input {name!r}"
        if name not in known:
            problems.append(f"{where}: no such input (known: {', '.join(sorted(known))})")
            continue
        problem = _check_value(value, known[name], graph, definitions,
                               skip=(node_id, name) in skip_values)
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def _check_value(
    value: Any, spec: list[Any], graph: dict[str, Any], definitions: dict[str, Any], *, skip: bool
) -> str | None:
    kind = spec[0]
    options: dict[str, Any] = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(value, list):
        return _check_link(value, kind, graph, definitions)
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        if not skip and value not in choices:
            shown = ", ".join(map(str, choices[:8])) or "nothing installed"
            return f"{value!r} is not in the server's list ({shown})"
        return None
    if kind not in _LITERAL_TYPES:
        return f"expects a link to a {kind} output, got the literal {value!r}"
    if kind == "INT" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expects INT, got {value!r}"
    if kind == "FLOAT" and (isinstance(value, bool) or not isinstance(value, int | float)):
        return f"expects FLOAT, got {value!r}"
    if kind == "STRING" and not isinstance(value, str):
        return f"expects STRING, got {value!r}"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"expects BOOLEAN, got {value!r}"
    if kind in ("INT", "FLOAT"):
        if "min" in options and value < options["min"]:
            return f"{value} is below the minimum {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{value} is above the maximum {options['max']}"
    return None


def _check_link(
    value: list[Any], kind: Any, graph: dict[str, Any], definitions: dict[str, Any]
) -> str | None:
    if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
        return f"malformed link {value!r} (expected [node_id, output_index])"
    source = graph.get(value[0])
    if source is None:
        return f"links to missing node {value[0]}"
    outputs = (definitions.get(source.get("class_type")) or {}).get("output", [])
    if not outputs:
        return None  # the source's own class problem is reported on that node
    if not 0 <= value[1] < len(outputs):
        return f"links to output {value[1]} of node {value[0]}, which has {len(outputs)}"
    produced = outputs[value[1]]
    if isinstance(kind, str) and kind != "*" and produced != "*" and produced != kind:
        return f"expects {kind}, but node {value[0]} output {value[1]} is {produced}"
    return None
