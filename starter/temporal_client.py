"""Connect to Temporal with storyloom's data converter, or fail with an error that says the fix."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client

from starter.converter import data_converter
from starter.settings import Settings

__all__ = ["TemporalUnreachable", "connect"]


class TemporalUnreachable(RuntimeError):
    """Temporal did not answer at the configured address (a configuration problem: exit 2)."""


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, asyncio.TimeoutError) or not text:
        return "no answer"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused"
    return text if len(text) < 200 else text[:200] + "…"


async def connect(settings: Settings, *, timeout: float = 5.0, **options: Any) -> Client:
    """A client on ``settings.temporal_address`` / namespace with the pydantic converter;
    ``options`` go to ``Client.connect`` (e.g. the metrics runtime and interceptors).

    Raises TemporalUnreachable naming the address and the fix when nothing answers in time.
    """
    address, namespace = settings.temporal_address, settings.temporal_namespace
    try:
        return await asyncio.wait_for(
            Client.connect(address, namespace=namespace, data_converter=data_converter,
                           **options),
            timeout=timeout,
        )
    except Exception as exc:
        raise TemporalUnreachable(
            f"Temporal is not reachable at {address} (namespace {namespace!r}): {_reason(exc)}. "
            "Start it with `storyloom up` "
            "(or point STORYLOOM_TEMPORAL_ADDRESS / TEMPORAL_ADDRESS at your cluster)."
        ) from exc
