"""Checking a generate or chat request the way Ollama does, before any scheduling: every 4xx
and 5xx it can earn, in the server's order, and the ``Job`` a valid request becomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulators.ollama import wire
from emulators.ollama.catalogue import ModelSpec, valid_name
from emulators.ollama.shapes import format_error
from emulators.ollama.state import Core, check_options, parse_keep_alive

__all__ = ["Job", "admit_request"]

_GENERATE_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "prompt": (str,), "system": (str,), "template": (str,), "suffix": (str,),
    "stream": (bool,), "raw": (bool,), "options": (dict,), "images": (list,), "context": (list,),
    "think": (bool, str),
}
_CHAT_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "messages": (list,), "tools": (list,), "stream": (bool,),
    "options": (dict,), "think": (bool, str),
}
_THINK_LEVELS = {"low", "medium", "high", "max"}


@dataclass
class Job:
    """A request that passed every check: what to answer, for whom, and how."""

    chat: bool
    sent_model: str
    spec: ModelSpec
    prompt: str
    stream: bool
    options: dict[str, Any]
    fmt: Any
    think: bool
    keep_alive: float | None
    raw: bool
    started: float


def admit_request(core: Core, body: dict[str, Any], chat: bool, started: float) -> web.Response | Job:
    """Every 4xx/5xx a request can earn before scheduling, in the server's order."""
    struct = "ChatRequest" if chat else "GenerateRequest"
    bad = wire.type_error(struct, body, _CHAT_FIELDS if chat else _GENERATE_FIELDS)
    if bad:
        return wire.error(400, bad)
    model = body.get("model") or ""
    if not model:
        return wire.error(400, "model is required") if chat else wire.error(404, "model '' not found")
    if not valid_name(model):
        return wire.error(400, "invalid model name")
    spec = core.models.lookup(model)
    if spec is None:
        return wire.error(404, f"model '{model}' not found")
    try:
        keep_alive = parse_keep_alive(body.get("keep_alive"))
    except ValueError as exc:
        return wire.error(400, str(exc))
    if spec.is_embedding:
        return wire.error(400, f'"{model}" does not support {"chat" if chat else "generate"}')
    think_raw = body.get("think")
    if isinstance(think_raw, str) and think_raw not in _THINK_LEVELS:
        return wire.error(400, f'invalid think value: "{think_raw}" (must be "high", "medium", '
                               '"low", "max", true, or false)')
    thinks = "thinking" in spec.capabilities
    always = spec.full_name in core.names("think_always")  # gpt-oss thinks whatever it is told
    if think_raw not in (None, False) and not thinks:
        return wire.error(400, f'"{model}" does not support thinking')
    if chat and body.get("tools") and "tools" not in spec.capabilities:
        return wire.error(400, f"{spec.full_name} does not support tools")
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        return wire.error(400, "raw mode does not support template, system, or context")
    fmt_problem = format_error(body.get("format"))
    if fmt_problem:
        return wire.error(500, fmt_problem)
    options = body.get("options") or {}
    opt_problem = check_options(options)
    if opt_problem:
        return wire.error(500, opt_problem)
    if chat:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)
    else:
        prompt = (body.get("system") or "") + "\n" + (body.get("prompt") or "")
        prompt = prompt.strip("\n")
    return Job(
        chat=chat, sent_model=model, spec=spec, prompt=prompt,
        stream=body.get("stream", True) is not False, options=options, fmt=body.get("format"),
        think=thinks and (think_raw is not False or always), keep_alive=keep_alive,
        raw=bool(body.get("raw")), started=started,
    )
