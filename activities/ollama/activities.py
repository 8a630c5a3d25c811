"""The LLM steps of a scene as Temporal activities: write_scene, extract_cast, free_llm_vram."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import activity

from activities.calllog import call_context
from activities.errors import ModelNotFound, StoryloomError, to_application_error
from activities.gpu.lease import GpuLeases, holds_gpu
from activities.heartbeat import heartbeating, report
from activities.ollama.answers import require_text
from activities.ollama.client import OllamaClient
from activities.ollama.prompts import (
    cast_prompt,
    first_sentences,
    scene_prompt,
    split_title,
    summary_prompt,
)
from workflows_temporal.contracts import (
    MAX_SCENE_CHARS,
    ExtractCastInput,
    FreeVramInput,
    SceneCast,
    WriteProgress,
    WriteSceneInput,
    WrittenScene,
)
from workflows_temporal.gpu_contracts import LeaseKind

__all__ = ["LlmActivities"]

logger = logging.getLogger("storyloom.activities.llm")
R = TypeVar("R")
_SCENE_TOKENS = 2048  # num_predict: a scene is 300-600 words; bounded so a loop cannot run away


def _llm_activity(
    fn: Callable[[Any, Any], Awaitable[R]],
) -> Callable[[Any, Any], Awaitable[R]]:
    """Run inside the call-log context, heartbeating on a timer for the whole activity (a slow
    model is silent for many seconds before its first byte, and a non-streamed call until its
    whole answer); a StoryloomError leaves as an ApplicationError."""

    @functools.wraps(fn)
    async def wrapper(self: Any, inp: Any) -> R:
        info = activity.info()
        with call_context(workflow_id=info.workflow_id, attempt=info.attempt,
                          activity=info.activity_type):
            try:
                async with heartbeating(self.heartbeat_every_s):
                    return await fn(self, inp)
            except StoryloomError as exc:
                raise to_application_error(exc) from exc

    return wrapper


class LlmActivities:
    """Activities over one injected OllamaClient.

    Errors leave as ``ApplicationError`` typed by class name; ``ModelNotFound``/``BadRequest``/
    ``StructuredOutputError`` are non-retryable, transport and 5xx failures retryable. None of
    these writes anything, so every one is safe to retry.
    """

    def __init__(
        self, client: OllamaClient, *, fallback_models: list[str] | None = None,
        heartbeat_every_s: float | None = None, gpu_leases: GpuLeases | None = None,
    ) -> None:
        self.client = client
        self.gpu_leases = gpu_leases  # set when Ollama shares a GPU: an llm lease per call
        self.fallback_models = list(fallback_models or [])
        self.heartbeat_every_s = heartbeat_every_s

    @activity.defn(name="write_scene")
    @_llm_activity
    @holds_gpu(LeaseKind.LLM)
    async def write_scene(self, inp: WriteSceneInput) -> WrittenScene:
        """Stream one scene from the LLM, heartbeating token counts. Falls back to the
        request's ``fallback_models`` (None: this worker's) in order when a model is missing or refuses the request for good
        (non-retryable); a retryable failure is raised so Temporal retries the same model."""
        prompt = scene_prompt(inp)
        fallbacks = self.fallback_models if inp.fallback_models is None else inp.fallback_models
        candidates = [inp.model] + [m for m in fallbacks if m != inp.model]
        first_error: StoryloomError | None = None
        for model in candidates:
            try:
                text, tokens = await self._stream_scene(model, prompt, inp.seed)
            except StoryloomError as exc:
                if exc.retryable:
                    raise
                logger.warning("model %s cannot write the scene: %s", model, exc.describe())
                first_error = first_error or exc
                continue
            note = None
            if model != inp.model and first_error is not None:
                note = f"written by {model}: {inp.model} failed ({first_error.message})"
            return await self._finish(model, text, tokens, note, inp.seed)
        assert first_error is not None
        raise first_error

    async def _stream_scene(self, model: str, prompt: str, seed: int) -> tuple[str, int]:
        """The scene's text and its chunk count; EmptyAnswer when none came back."""
        progress = WriteProgress(tokens=0, model=model)
        report(progress.model_copy())
        parts: list[str] = []
        thinking: list[str] = []
        size = 0
        done_reason: str | None = None
        stream = self.client.generate_stream(
            model, prompt, seed=seed, temperature=_temperature(seed),
            options={"num_predict": _SCENE_TOKENS},
        )
        async for chunk in stream:
            progress.tokens += 1
            if progress.tokens % 16 == 0:
                report(progress.model_copy())
            parts.append(chunk.response)
            thinking.append(chunk.thinking or "")
            size += len(chunk.response)
            done_reason = chunk.done_reason if chunk.done else done_reason
            if size >= MAX_SCENE_CHARS:
                await stream.aclose()  # closing the response stops the generation
                break
        report(progress.model_copy())
        text = "".join(parts)
        require_text(text, thinking="".join(thinking), done_reason=done_reason,
                     where=f"{self.client.base_url}/api/generate model={model}")
        return text, progress.tokens

    async def _finish(
        self, model: str, answer: str, tokens: int, note: str | None, seed: int
    ) -> WrittenScene:
        title, text = split_title(answer)
        if len(text) > MAX_SCENE_CHARS:
            cut = text[:MAX_SCENE_CHARS]
            text = cut[: cut.rfind(". ") + 1] or cut
        try:
            result = await self.client.generate(
                model, summary_prompt(text), seed=seed, temperature=0.0,
                options={"num_predict": 160},
            )
            summary = first_sentences(result.text) or first_sentences(text)
        except StoryloomError as exc:  # the scene is written; a plain extract will do
            logger.warning("summary call failed, using the opening: %s", exc.describe())
            summary = first_sentences(text)
        return WrittenScene(title=title[:200], text=text, summary=summary, model=model,
                            tokens=tokens, fallback_note=note)

    @activity.defn(name="extract_cast")
    @_llm_activity
    @holds_gpu(LeaseKind.LLM)
    async def extract_cast(self, inp: ExtractCastInput) -> SceneCast:
        """Characters (by the names in the text), setting and a visual prompt, as JSON-schema
        structured output. StructuredOutputError and EmptyAnswer are final: at temperature 0 a
        retry repeats them."""
        report(WriteProgress(model=inp.model))
        cast = await self.client.generate_json(
            inp.model, cast_prompt(inp), SceneCast, seed=inp.seed, temperature=0.0
        )
        seen: set[str] = set()
        unique = []
        for person in cast.characters:
            if person.name.strip() and person.name.lower() not in seen:
                seen.add(person.name.lower())
                unique.append(person)
        return cast.model_copy(update={"characters": unique})

    @activity.defn(name="free_llm_vram")
    @_llm_activity
    async def free_llm_vram(self, inp: FreeVramInput) -> None:
        """Unload the model and wait until /api/ps confirms it (idempotent). A model that is not
        installed has nothing to free, so ModelNotFound is not an error here."""
        try:
            await self.client.unload(inp.model, deadline_s=inp.deadline_s)
        except ModelNotFound:
            logger.info("model %s is not installed; nothing to unload", inp.model)


def _temperature(seed: int) -> float:
    """0.7-0.9, fixed per seed: varied prose across scenes, reproducible per workflow."""
    return 0.7 + (seed % 5) * 0.05
