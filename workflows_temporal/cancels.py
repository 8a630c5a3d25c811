"""A user's cancel that arrives while a render finishes anyway: the picture is kept, recorded.

ComfyUI checks for an interrupt only before a node starts and inside progress hooks, so a cancel
during the last node (SaveImage) answers ``{"cancelled": true}`` and the job still ends
completed with its outputs (observed on a real 0.33.0 server). The render activity hears of a
cancel only on its next heartbeat: it may download the picture and return before that. A render
step waits for its cancellation (WAIT_CANCELLATION_COMPLETED), so the workflow then gets a
result after the cancel. It must still end Cancelled, as the user asked; the finished picture is
recorded on the node with ``KEPT_AFTER_CANCEL_NOTE`` (a file storyloom keeps is always one the
database knows). Deterministic: the cancel request is an event of the history.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

__all__ = ["KEPT_AFTER_CANCEL_NOTE", "KEPT_AFTER_CANCEL_PATCH", "PictureKeptOnCancel",
           "cancelled_after_render"]

KEPT_AFTER_CANCEL_NOTE = "cancelled by user after ComfyUI had finished the picture; it is kept"
KEPT_AFTER_CANCEL_PATCH = "picture-kept-after-cancel"


class PictureKeptOnCancel(asyncio.CancelledError):
    """Raised by a workflow after recording a picture that finished despite the user's cancel;
    the workflow ends Cancelled (a cleanup must not overwrite the recorded picture)."""


def cancelled_after_render() -> bool:
    """True when the workflow was asked to cancel while the render it awaited returned a
    picture anyway (only then is the patch marker recorded)."""
    return workflow.cancellation_reason() is not None and workflow.patched(
        KEPT_AFTER_CANCEL_PATCH)
