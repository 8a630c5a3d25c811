"""Validate an API-format graph the way ComfyUI 0.33.0 does (§2.3 error types and envelope)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Verdict", "envelope", "validate_prompt"]

Error = dict[str, Any]


@dataclass
class Verdict:
    """Outcome: `error` is None when at least one output is valid (then it runs `outputs`)."""

    error: Error | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def envelope(
    kind: str, message: str, details: str = "", extra: dict[str, Any] | None = None
) -> Error:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


class _Checker:
    def __init__(self, prompt: dict[str, Any], info: dict[str, Any], input_dir: Path) -> None:
        self.prompt = prompt
        self.info = info
        self.input_dir = input_dir
        self.validated: dict[str, tuple[bool, list[Error]]] = {}

    def node(self, node_id: str) -> tuple[bool, list[Error]]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        spec = self.info[node["class_type"]]
        inputs: dict[str, Any] = node.get("inputs", {})
        errors: list[Error] = []
        valid = True
        self.validated[node_id] = (True, [])  # provisional: a cycle must not recurse forever
        for name, conf in spec["input"].get("required", {}).items():
            if name not in inputs:
                errors.append(
                    envelope(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        {"input_name": name},
                    )
                )
                continue
            ok, errs = self._input(name, conf, inputs[name], node["class_type"])
            errors.extend(errs)
            valid = valid and ok
        verdict = (valid and not errors, errors)
        self.validated[node_id] = verdict
        return verdict

    def _input(
        self, name: str, conf: list[Any], val: Any, class_type: str
    ) -> tuple[bool, list[Error]]:
        kind = conf[0]
        opts: dict[str, Any] = conf[1] if len(conf) > 1 else {}
        conf = [kind, opts]  # the server always reports (type, options), even when {}
        if isinstance(val, list):
            if len(val) != 2:
                return False, [
                    envelope(
                        "bad_linked_input",
                        "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name,
                        {"input_name": name, "input_config": conf, "received_value": val},
                    )
                ]
            return self._link(name, conf, val)
        try:
            if kind == "INT":
                val = int(val)
            elif kind == "FLOAT":
                val = float(val)
            elif kind == "STRING":
                val = str(val)
        except Exception as exc:  # noqa: BLE001 - mirrors the server's broad conversion guard
            return False, [
                envelope(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {kind} value",
                    f"{name}, {val}, {exc}",
                    {
                        "input_name": name,
                        "input_config": conf,
                        "received_value": val,
                        "exception_message": str(exc),
                    },
                )
            ]
        base = {"input_name": name, "input_config": conf, "received_value": val}
        if class_type == "LoadImage" and name == "image":
            # LoadImage validates its own input (file present), so the combo list is not checked.
            if not (self.input_dir / str(val)).is_file():
                return False, [
                    envelope(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"{name} - Invalid image file: {val}",
                        {"input_name": name},
                    )
                ]
            return True, []
        if "min" in opts and val < opts["min"]:
            return False, [
                envelope(
                    "value_smaller_than_min",
                    f"Value {val} smaller than min of {opts['min']}",
                    name,
                    base,
                )
            ]
        if "max" in opts and val > opts["max"]:
            return False, [
                envelope(
                    "value_bigger_than_max",
                    f"Value {val} bigger than max of {opts['max']}",
                    name,
                    base,
                )
            ]
        if isinstance(kind, list) and val not in kind:
            listed = str(kind) if len(kind) <= 20 else f"(list of length {len(kind)})"
            return False, [
                envelope(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{val}' not in {listed}",
                    {
                        "input_name": name,
                        "input_config": conf if len(kind) <= 20 else None,
                        "received_value": val,
                    },
                )
            ]
        return True, []

    def _link(self, name: str, conf: list[Any], val: list[Any]) -> tuple[bool, list[Error]]:
        source_id = str(val[0])
        source_class = self.prompt[source_id][
            "class_type"
        ]  # KeyError → exception_during_validation
        kind = conf[0]
        # outside the try, as on the server: a bad slot index fails the linking node itself
        received = tuple(self.info[source_class]["output"])[val[1]]
        try:
            wanted = "COMBO" if isinstance(kind, list) else kind
            if received != wanted and "*" not in (received, wanted):
                return False, [
                    envelope(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({wanted})",
                        {
                            "input_name": name,
                            "input_config": conf,
                            "received_type": received,
                            "linked_node": val,
                        },
                    )
                ]
            ok, _ = self.node(source_id)
            return ok, []
        except Exception as exc:  # noqa: BLE001 - the server reports any inner failure this way
            reasons = [
                envelope(
                    "exception_during_inner_validation",
                    "Exception when validating inner node",
                    str(exc),
                    {
                        "input_name": name,
                        "input_config": conf,
                        "exception_message": str(exc),
                        "exception_type": type(exc).__name__,
                        "traceback": traceback.format_tb(exc.__traceback__),
                        "linked_node": val,
                    },
                )
            ]
            self.validated[source_id] = (False, reasons)
            return False, []


def _missing_type(node_id: str, class_type: Any) -> Error:
    if class_type is None:
        msg = f"Node 'ID #{node_id}' has no class_type. The workflow may be corrupted or a custom node is missing."
    else:
        msg = f"Node '{class_type}' not found. The custom node may not be installed."
    return envelope(
        "missing_node_type",
        msg,
        f"Node ID '#{node_id}'",
        {"node_id": node_id, "class_type": class_type, "node_title": class_type},
    )


def validate_prompt(prompt: dict[str, Any], info: dict[str, Any], input_dir: Path) -> Verdict:
    """Check the whole graph; raises only for shapes the real server also crashes on (→ 500)."""
    for node_id, node in prompt.items():
        class_type = node.get("class_type")
        if class_type is None or class_type not in info:
            return Verdict(_missing_type(node_id, class_type), [])
    outputs = sorted(
        (nid for nid, n in prompt.items() if info[n["class_type"]].get("output_node")),
        key=lambda s: (len(s), s),
    )
    if not outputs:
        return Verdict(envelope("prompt_no_outputs", "Prompt has no outputs"), [])
    checker = _Checker(prompt, info, input_dir)
    good: list[str] = []
    failures: list[tuple[str, list[Error]]] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        try:
            ok, reasons = checker.node(out)
        except Exception as exc:  # noqa: BLE001 - e.g. a link to a node id that does not exist
            ok = False
            reasons = [
                envelope(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {
                        "exception_type": type(exc).__name__,
                        "traceback": traceback.format_tb(exc.__traceback__),
                    },
                )
            ]
            checker.validated[out] = (False, reasons)
        if ok:
            good.append(out)
            continue
        failures.append((out, reasons))
        for node_id, (valid, errs) in checker.validated.items():
            if valid or not errs:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": errs,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failures for e in errs)
        error = envelope(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return Verdict(error, [], node_errors)
    return Verdict(None, good, node_errors)
