"""Adopting a render that another GPU's ComfyUI accepted before its worker died (issue 13).

When a GPU's worker is gone for good, the scene moves its render to another GPU and names the old
GPU's ComfyUI in ``RenderInput.adopt_from``. If that ComfyUI still has the prompt (pending,
running or done), the render follows it there and downloads from there: the job never runs
twice (ARCHITECTURE rule 4). Unreachable, or it never had the prompt: render here as a new job.
"""

from __future__ import annotations

import logging

from activities.comfyui.client import ComfyClient
from activities.comfyui.models import JobState
from activities.errors import StoryloomError
from workflows_temporal.contracts import RenderInput

__all__ = ["adoptable_client"]

logger = logging.getLogger(__name__)
_FOLLOWABLE = (JobState.PENDING, JobState.RUNNING, JobState.COMPLETED)


async def adoptable_client(inp: RenderInput, prompt_id: str, own: ComfyClient) -> ComfyClient | None:
    """A client of ``inp.adopt_from`` when that ComfyUI has ``prompt_id`` (the caller closes
    it), else None. Never raises: an unreachable server means "render here"."""
    url = (inp.adopt_from or "").rstrip("/")
    if not url or url == own.base_url.rstrip("/"):
        return None
    other = ComfyClient(url, timeouts=own.timeouts)
    try:
        status = await other.job_status(prompt_id)
    except StoryloomError as exc:
        logger.warning("render %s: the previous GPU's ComfyUI %s does not answer (%s); "
                       "rendering here", inp.workflow_id, url, exc)
        await other.aclose()
        return None
    if status.state in _FOLLOWABLE:
        logger.info("render %s: prompt %s is %s on the previous GPU's ComfyUI %s; following it "
                    "there instead of rendering it again", inp.workflow_id, prompt_id,
                    status.state, url)
        return other
    await other.aclose()
    return None
