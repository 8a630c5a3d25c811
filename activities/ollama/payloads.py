"""The generate request body, checked locally: the server would answer bad options with a 500."""

from __future__ import annotations

import re
from typing import Any

from activities.errors import BadRequest
from activities.ollama.failures import SERVICE
from activities.ollama.types import OPTION_TYPES, GenerateRequest

__all__ = ["generate_body", "normalise_name"]

_DURATION = re.compile(r"^[+-]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")


def normalise_name(name: str) -> str:
    """``llama3.2`` -> ``llama3.2:latest``, lower-cased, as /api/tags and /api/ps list names."""
    name = name.strip().lower()
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


def generate_body(
    base_url: str, model: str, prompt: str, *, stream: bool, system: str | None = None,
    seed: int | None = None, temperature: float | None = None,
    options: dict[str, Any] | None = None, format: str | dict[str, Any] | None = None,
    keep_alive: str | float | None = None, think: bool | str | None = None,
) -> dict[str, Any]:
    """The JSON body for /api/generate: sampling inside ``options``, ``stream`` always present.

    Raises BadRequest (final) for unknown options, wrong option types, a bad ``format`` or a
    unitless ``keep_alive`` string, which the server would answer with a 500 or 400.
    ``think`` is sent as given (None: absent); ``activities.ollama.thinking`` decides it.
    """
    merged = dict(options or {})
    if seed is not None:
        merged["seed"] = seed
    if temperature is not None:
        merged["temperature"] = temperature
    where = base_url + "/api/generate"
    for key, value in merged.items():
        types = OPTION_TYPES.get(key)
        ok = types is not None and isinstance(value, types) and (
            bool in types or not isinstance(value, bool)
        )
        if key == "stop":
            ok = isinstance(value, list) and all(isinstance(s, str) for s in value)
        if not ok:
            raise BadRequest(
                f"option {key!r}={value!r} is unknown or of the wrong type",
                service=SERVICE, where=where, hint=f"Known options: {sorted(OPTION_TYPES)}",
            )
    if format is not None and format != "json" and not isinstance(format, dict):
        raise BadRequest(f"format {format!r} is neither 'json' nor a JSON schema",
                         service=SERVICE, where=where)
    if isinstance(keep_alive, bool) or (
        isinstance(keep_alive, str) and keep_alive != "0" and not _DURATION.match(keep_alive)
    ):
        raise BadRequest(f"keep_alive {keep_alive!r} needs a unit, like '10m' or '-1m'",
                         service=SERVICE, where=where)
    request = GenerateRequest(
        model=model, prompt=prompt, stream=stream, system=system, format=format,
        options=merged or None, keep_alive=keep_alive, think=think,
    )
    return request.model_dump(exclude_none=True)
