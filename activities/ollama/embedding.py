"""The LLM side of story memory: the ``embed_texts`` activity (Ollama /api/embed)."""

from __future__ import annotations

from temporalio import activity

from activities.calllog import call_context
from activities.errors import StoryloomError, to_application_error
from activities.gpu.lease import GpuLeases, holds_gpu
from activities.heartbeat import heartbeating
from activities.ollama.client import OllamaClient
from workflows_temporal.contracts import EmbeddedTexts, EmbedTextsInput
from workflows_temporal.gpu_contracts import LeaseKind

__all__ = ["EmbedActivities"]


class EmbedActivities:
    """``embed_texts`` over one injected OllamaClient. Writes nothing, so safe to retry;
    ModelNotFound/BadRequest are non-retryable, transport and 5xx failures retryable."""

    def __init__(self, client: OllamaClient, gpu_leases: GpuLeases | None = None) -> None:
        self.client = client
        self.gpu_leases = gpu_leases  # an embedding model loads on the GPU too (issue 13)

    @activity.defn(name="embed_texts")
    @holds_gpu(LeaseKind.LLM)
    async def embed_texts(self, inp: EmbedTextsInput) -> EmbeddedTexts:
        """L2-normalised vectors of ``inp.texts`` in order, from ``inp.model``."""
        info = activity.info()
        with call_context(workflow_id=info.workflow_id, attempt=info.attempt,
                          activity=info.activity_type):
            try:
                async with heartbeating():  # a cold embedding model loads silently
                    return EmbeddedTexts(vectors=await self.client.embed(inp.model, inp.texts))
            except StoryloomError as exc:
                raise to_application_error(exc) from exc
