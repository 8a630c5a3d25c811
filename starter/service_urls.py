"""The service URLs a terminal sets versus the ones the running workers call.

The starting terminal decides the settings that travel with a request (models, template,
checkpoint, size); the workers call Ollama and ComfyUI at their own ``STORYLOOM_OLLAMA_URL`` /
``STORYLOOM_COMFYUI_URL``. Workers put those URLs in their Temporal identity
(``starter.pollers.worker_identity``), so a terminal that set a different one is told in one
line that its URL only serves its own checks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import TextIO

from temporalio.api.enums.v1 import TaskQueueType

from starter.pollers import live_pollers, store_of
from starter.settings import Settings
from starter.temporal_client import connect
from workflows_temporal.policies import LLM_QUEUE, image_queue

__all__ = ["other_urls", "shown_url", "warn_other_urls"]

logger = logging.getLogger(__name__)
_PROBE_TIMEOUT_S = 1.5
_CREDENTIALS = re.compile(r"//[^/@]*@")
# identity key -> (the settings field, the variable, the queue whose workers call it)
_SERVICES = {"ollama_url": ("ollama_url", "STORYLOOM_OLLAMA_URL", "llm"),
             "comfyui_url": ("comfyui_url", "STORYLOOM_COMFYUI_URL", "image")}


def shown_url(url: str) -> str:
    """``url`` without credentials (``user:pw@`` becomes ``***@``): safe in an identity."""
    return _CREDENTIALS.sub("//***@", url)


async def other_urls(settings: Settings, *, illustrate: bool = True) -> list[str]:
    """One sentence per service URL this terminal set that the live workers do not use;
    empty when they agree, nothing was set here, or Temporal does not answer."""
    wanted = [key for key, (field, _, _) in _SERVICES.items()
              if field in settings.model_fields_set and (illustrate or key != "comfyui_url")]
    if not wanted:
        return []
    queues = {"llm": LLM_QUEUE, "image": image_queue(settings.gpu)}
    try:
        client = await connect(settings, timeout=_PROBE_TIMEOUT_S)
        lines = []
        for key in wanted:
            field, variable, role = _SERVICES[key]
            pollers = await asyncio.wait_for(live_pollers(
                client, queues[role], TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY), _PROBE_TIMEOUT_S)
            theirs = sorted({info[key] for p in pollers
                             if (parsed := store_of(p.identity)) and key in (info := parsed[1])})
            mine = shown_url(str(getattr(settings, field)))
            if theirs and mine not in theirs:
                lines.append(f"warning: this terminal's {variable} is {mine}, but the {role} "
                             f"workers call {', '.join(theirs)}: the work uses theirs (set it "
                             "where the worker runs); yours serves only this terminal's checks.")
        return lines
    except Exception as exc:  # noqa: BLE001 - no Temporal: nothing to compare with
        logger.info("service URL check skipped: %s", exc)
        return []


async def warn_other_urls(settings: Settings, *, illustrate: bool = True,
                          out: TextIO | None = None) -> None:
    """Print ``other_urls`` on stderr (or ``out``)."""
    for line in await other_urls(settings, illustrate=illustrate):
        print(line, file=out or sys.stderr)
