"""Reading a finished Ollama answer: is there text at all, and the one JSON value in it.

Real models do not always answer the way the request asked (protocol §5.3: the structured
result is a *string* to parse and validate):

* a thinking model may finish with ``response: ""`` and its whole answer in ``thinking``;
* a small model wraps JSON in a ```json fence, returns the JSON as a JSON string, or puts a
  sentence before it.

``require_text`` turns an answer without text into an error that says what came back;
``parse_structured`` accepts one unambiguous JSON value (plain, fenced, string-wrapped, or the
only object inside prose), validates it, and otherwise says what did not fit.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from activities.errors import EmptyAnswer, ServerError, StructuredOutputError
from activities.ollama.failures import SERVICE

__all__ = ["parse_json_answer", "parse_structured", "require_text"]

logger = logging.getLogger("storyloom.ollama")
T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\r?\n?(.*?)```", re.DOTALL)
_MAX_UNWRAP = 3  # fence inside a string inside a fence is the deepest nesting worth reading


def _preview(text: str, n: int = 120) -> str:
    flat = " ".join(text.split())
    return repr(flat[:n] + ("…" if len(flat) > n else ""))


def require_text(
    text: str, *, thinking: str = "", done_reason: str | None = None, where: str = "",
) -> None:
    """Raise when a finished answer carries no text (whitespace counts as none).

    ``done_reason`` ``load``/``unload`` means the server loaded or unloaded the model instead
    of answering (§2.5): ServerError, retryable. Text only in ``thinking``: EmptyAnswer (final),
    saying so. Otherwise EmptyAnswer naming the done_reason.
    """
    if text.strip():
        return
    if done_reason in ("load", "unload"):
        raise ServerError(
            f"the answer is empty with done_reason {done_reason!r}: the model was "
            f"{done_reason}ed instead of answering", service=SERVICE, where=where, status=200,
            hint="Another client may be loading or unloading models; retried")
    if thinking.strip():
        raise EmptyAnswer(
            f"the model wrote its whole answer ({len(thinking)} characters) in `thinking` and "
            f"nothing in `response`: {_preview(thinking, 80)}", service=SERVICE, where=where,
            details={"thinking_chars": len(thinking), "done_reason": done_reason},
            hint="This thinking model ignored think=false; choose a model without thinking "
                 "(`ollama show MODEL` lists its capabilities) or another fallback model")
    raise EmptyAnswer(
        f"the model finished (done_reason {done_reason or 'absent'}) without writing any text",
        service=SERVICE, where=where, details={"done_reason": done_reason},
        hint="Try another model, or check the prompt and the model's template")


class _Unclear(ValueError):
    """No single JSON value could be told apart; ``str`` says why."""


def _objects_in_prose(text: str) -> list[Any]:
    """Every top-level JSON object that decodes at a ``{`` of ``text``, left to right."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    pos = text.find("{")
    while pos >= 0:
        try:
            value, end = decoder.raw_decode(text, pos)
        except ValueError:
            pos = text.find("{", pos + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        pos = text.find("{", end)
    return found


def parse_json_answer(text: str) -> tuple[Any, str]:
    """(value, how): the one JSON value in ``text`` and how it was found (``""`` when the text
    is plain JSON, else ``"fenced"``, ``"string-wrapped"``, ``"found in prose"``, joined by
    ``+``). Raises ValueError saying why when there is none or more than one."""
    how: list[str] = []
    for _ in range(_MAX_UNWRAP + 1):
        stripped = text.strip()
        if not stripped:
            raise _Unclear("the answer is empty")
        try:
            value = json.loads(stripped)
        except ValueError:
            pass
        else:
            inner = value.strip() if isinstance(value, str) else ""
            if inner[:1] in ("{", "[") or inner.startswith("```"):
                how.append("string-wrapped")
                text = inner
                continue
            return value, "+".join(how)
        fences = [body for _, body in _FENCE.findall(stripped) if body.strip()]
        if len(fences) == 1:
            how.append("fenced")
            text = fences[0]
            continue
        if len(fences) > 1:
            raise _Unclear(f"{len(fences)} fenced blocks in the answer; cannot tell which one "
                           "is meant")
        objects = _objects_in_prose(stripped)
        if len(objects) == 1:
            how.append("found in prose")
            return objects[0], "+".join(how)
        if not objects:
            raise _Unclear(f"no JSON object in the answer: {_preview(stripped)}")
        raise _Unclear(f"{len(objects)} JSON objects in the answer; cannot tell which one is "
                       f"meant: {_preview(stripped)}")
    raise _Unclear(f"JSON wrapped more than {_MAX_UNWRAP} times: {_preview(text)}")


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )


def parse_structured(text: str, model_cls: type[T], *, where: str = "") -> T:
    """Validate the one JSON value in ``text`` as ``model_cls``.

    Raises StructuredOutputError (final: at temperature 0 a retry repeats it) naming what did
    not fit: no value, several values, or the fields that fail validation.
    """
    hint = "Try another model or a simpler schema"
    try:
        value, how = parse_json_answer(text)
    except ValueError as exc:
        raise StructuredOutputError(f"the answer is not usable JSON: {exc}", service=SERVICE,
                                    where=where, hint=hint) from exc
    if how:
        logger.info("structured answer was %s; unwrapped it", how, extra={"where": where})
    try:
        return model_cls.model_validate(value)
    except ValidationError as exc:
        found = f" ({how})" if how else ""
        raise StructuredOutputError(
            f"the JSON{found} does not fit {model_cls.__name__}: {_problems(exc)}",
            service=SERVICE, where=where, hint=hint) from exc
