"""Execution order (dependencies first) and cache signatures of a validated graph."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["CycleError", "plan_nodes", "signatures"]


class CycleError(Exception):
    """The graph has a dependency cycle through the node named in `args[0]`."""


def _links(node: dict[str, Any]) -> list[str]:
    return [
        str(v[0]) for v in node.get("inputs", {}).values() if isinstance(v, list) and len(v) == 2
    ]


def plan_nodes(graph: dict[str, Any], outputs: list[str]) -> list[str]:
    """Every node the outputs need, each after its inputs; raises CycleError."""
    order: list[str] = []
    done: set[str] = set()
    active: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in done:
            return
        if node_id in active:
            raise CycleError(node_id)
        active.add(node_id)
        for source in _links(graph[node_id]):
            visit(source)
        active.discard(node_id)
        done.add(node_id)
        order.append(node_id)

    for out in outputs:
        visit(out)
    return order


def _file_stamp(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError:
        return [0, 0]
    return [st.st_mtime_ns, st.st_size]


def signatures(graph: dict[str, Any], order: list[str], input_dir: Path) -> dict[str, bytes]:
    """Cache key per node: class, literal inputs and the keys of linked nodes (a new seed → new key)."""
    sigs: dict[str, bytes] = {}
    for node_id in order:
        node = graph[node_id]
        parts: dict[str, Any] = {}
        for name, value in sorted(node.get("inputs", {}).items()):
            if isinstance(value, list) and len(value) == 2:
                parts[name] = ["link", sigs[str(value[0])].hex(), value[1]]
            else:
                parts[name] = ["value", value]
        if node["class_type"] == "LoadImage":
            parts["__file__"] = _file_stamp(input_dir / str(node["inputs"].get("image", "")))
        text = json.dumps([node["class_type"], parts], sort_keys=True, default=str)
        sigs[node_id] = hashlib.sha256(text.encode("utf-8")).digest()
    return sigs
