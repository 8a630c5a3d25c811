"""A ``/prompt`` 400 read into a ComfyValidationError, whatever the server version wrote.

ComfyUI 0.33 answers ``{"error": {type, message, details, extra_info}, "node_errors": {...}}``
(protocol §2.3). Servers before 0.33 also sent ``{"error": "<plain text>"}``, ``node_errors``
as a list, or node entries without ``errors`` (*older versions*). Every shape is accepted: a
refused prompt is always a final ComfyValidationError that carries ComfyUI's own message, never
an AttributeError that the engine would retry (posting the same refused graph again and again).
"""

from __future__ import annotations

import ast
import json
from typing import Any

import httpx

from activities.comfyui.transport import SERVICE
from activities.errors import ComfyValidationError

__all__ = ["validation_error"]

_HINT = "Fix the template or its parameters; resubmitting the same graph fails the same way"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)[:300]


def _node_problems(node_errors: Any, graph: dict[str, Any]) -> list[dict[str, str]]:
    """One problem per per-input error of ``node_errors`` (a dict keyed by node id, or a
    list on some older servers); malformed entries still name their node."""
    items = node_errors.items() if isinstance(node_errors, dict) else []
    problems: list[dict[str, str]] = []
    for node_id, node in items:
        node = node if isinstance(node, dict) else {"errors": [node]}
        known = graph.get(str(node_id))
        class_type = node.get("class_type") or (known.get("class_type")
                                                if isinstance(known, dict) else None)
        raw_errors = node.get("errors")
        errors: list[Any] = raw_errors if isinstance(raw_errors, list) else [node]
        for item in errors:
            item = item if isinstance(item, dict) else {"message": _text(item)}
            extra = _dict(item.get("extra_info"))
            details = _text(item.get("details", ""))
            message = _text(item.get("message", ""))
            problems.append({
                "node_id": str(node_id),
                "class_type": str(class_type or "-"),
                "input": str(extra.get("input_name") or details).split(",")[0],
                "message": f"{message} ({details})" if details else message,
            })
    return problems


def validation_error(
    response: httpx.Response, graph: dict[str, Any], where: str
) -> ComfyValidationError:
    """The final error for a 400 from ``/prompt``, naming node id, class, input and message."""
    try:
        body: Any = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:300] or "(empty body)"
        return ComfyValidationError(
            f"ComfyUI refused the prompt: {text}", [], service=SERVICE, where=where, status=400,
            hint=_HINT,
        )
    error = body.get("error")
    problems = _node_problems(body.get("node_errors"), graph)
    if isinstance(error, dict):
        kind = str(error.get("type") or "invalid")
        said = _text(error.get("message") or "")
        if not problems:
            extra = _dict(error.get("extra_info"))
            problems.append({
                "node_id": str(extra.get("node_id") or "-"),
                "class_type": str(extra.get("class_type") or "-"),
                "input": "",
                "message": f"{kind}: {said}",
            })
        headline = f"ComfyUI rejected the graph ({kind})"
    else:
        # An older server's plain-text error: ComfyUI's own words are the headline.
        said = _text(error) if error is not None else "no reason given"
        headline = f"ComfyUI rejected the graph: {said}"
    return ComfyValidationError(
        headline, problems, service=SERVICE, where=where, status=400, hint=_hint(problems),
    )


_CHECKPOINT_INPUT = "ckpt_name"
_NAMES_SHOWN = 8


def _hint(problems: list[dict[str, str]]) -> str:
    """The generic hint, or for a checkpoint the server lacks (``value_not_in_list`` on
    ``ckpt_name``): the setting that picks it and the server's checkpoints (from its message
    ``ckpt_name: 'x' not in ['a', 'b']``)."""
    for p in problems:
        message = p.get("message", "")
        if p.get("input") != _CHECKPOINT_INPUT or " not in " not in message:
            continue
        listed = message.rpartition(" not in ")[2].rstrip(")")
        try:
            names = [str(n) for n in ast.literal_eval(listed)]
        except (ValueError, SyntaxError, TypeError):  # "(list of length 40)": too many to list
            names = None
        if names is None:
            have = "`storyloom doctor` lists the server's checkpoints"
        elif names:
            have = "the server's checkpoints: " + ", ".join(names[:_NAMES_SHOWN]) + (
                " …" if len(names) > _NAMES_SHOWN else "")
        else:
            have = "the server has no checkpoints: put one in ComfyUI's models/checkpoints"
        return (f"Set STORYLOOM_CHECKPOINT for new scenes, or `storyloom retry-image NODE "
                f"--checkpoint NAME` for this one, to a checkpoint the server has ({have})")
    return _HINT
