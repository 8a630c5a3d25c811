"""Which models think, and the ``think`` field storyloom sends them.

Ollama turns thinking on by default for a model whose ``/api/show`` ``capabilities`` include
``thinking`` (protocol §2.1: absent means ``true``), answers ``think: true`` to any other model
with a 400 (§8), and a thinking model may then finish with ``response: ""`` and its whole answer
in ``thinking`` (seen with a JSON ``format``). Thinking also costs most of the time on slow
hardware. So storyloom decides per model, from its capabilities, cached per client:

* ``"auto"`` (the default): ``think: false`` to a thinking model, nothing to any other model
  and nothing when the server does not report capabilities (before v0.6.4);
* ``True`` or a level (``"low"``...): sent, but refused locally for a model that cannot think;
* ``False``: sent only to a thinking model (the protocol does not say whether ``false`` is a 400
  for other models, so it is not risked);
* ``None``: never sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from activities.errors import BadRequest
from activities.ollama.failures import SERVICE
from activities.ollama.payloads import normalise_name

__all__ = ["THINK_LEVELS", "CapabilityCache", "ThinkChoice", "think_field"]

logger = logging.getLogger("storyloom.ollama")

ThinkChoice = bool | Literal["auto", "low", "medium", "high", "max"] | None
THINK_LEVELS = ("low", "medium", "high", "max")


def think_field(
    choice: ThinkChoice, capabilities: frozenset[str] | None, *, model: str, where: str,
) -> bool | str | None:
    """The ``think`` value to send (None: leave the field out). Raises BadRequest (final) for
    ``think`` on a model whose capabilities lack ``thinking``, or an unknown level."""
    if choice is None:
        return None
    thinks = capabilities is not None and "thinking" in capabilities
    if choice == "auto" or choice is False:
        return False if thinks else None
    if isinstance(choice, str) and choice not in THINK_LEVELS:
        raise BadRequest(f"think {choice!r} is not one of true, false, {', '.join(THINK_LEVELS)}",
                         service=SERVICE, where=where)
    if capabilities is not None and not thinks:
        raise BadRequest(
            f"model {model!r} cannot think (capabilities: {', '.join(sorted(capabilities))})",
            service=SERVICE, where=where,
            hint="Ollama answers think=true to such a model with a 400; drop `think` or choose a "
                 "thinking model")
    return choice


class CapabilityCache:
    """``capabilities`` per model (normalised ``name:tag``), from ``show``, kept ``ttl_s``.

    ``show(model)`` returns the ``/api/show`` object and raises the client's typed errors
    (ModelNotFound for a model that is not installed). ``None``: the server did not say (before
    v0.6.4), or refused ``/api/show`` with a 4xx (a proxy forwarding only some routes).
    """

    def __init__(
        self, show: Callable[[str], Awaitable[dict[str, object]]], *, ttl_s: float = 600.0,
    ) -> None:
        self._show = show
        self._ttl_s = ttl_s
        self._known: dict[str, tuple[float, frozenset[str] | None]] = {}

    async def of(self, model: str) -> frozenset[str] | None:
        key = normalise_name(model)
        hit = self._known.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        try:
            reply = await self._show(model)
        except BadRequest as exc:  # a proxy that forwards only some routes: decide without it
            logger.warning("cannot read the capabilities of %s: %s", model, exc.describe())
            reply = {}
        raw = reply.get("capabilities") if isinstance(reply, dict) else None
        caps = frozenset(str(c) for c in raw) if isinstance(raw, list) else None
        self._known[key] = (now, caps)
        return caps

    def forget(self, model: str) -> None:
        self._known.pop(normalise_name(model), None)
