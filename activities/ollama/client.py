"""The async Ollama client: one attempt per call, typed errors, bounded-memory streaming.

Timeouts: ``connect``; ``first_byte`` until the response headers (covers a cold load, Ollama sends
nothing before the first token); ``idle`` between two lines of a stream; ``write`` to send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from activities.calllog import CallTimer
from activities.errors import (
    BadRequest,
    ModelNotFound,
    ServerError,
    ServiceTimeout,
    StoryloomError,
    StructuredOutputError,
    TruncatedStream,
)
from activities.ollama.answers import parse_structured, require_text
from activities.ollama.failures import SERVICE, CallSite, error_text, from_status, translated
from activities.ollama.payloads import generate_body, normalise_name
from activities.ollama.thinking import CapabilityCache, ThinkChoice, think_field
from activities.ollama.types import (
    EmbeddingsResponse,
    EmbedResponse,
    GenerateChunk,
    GenerateResult,
    LoadedModel,
    ModelInfo,
)

__all__ = ["OllamaClient", "OllamaTimeouts"]

logger = logging.getLogger("storyloom.ollama")
T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class OllamaTimeouts:
    """Seconds; all finite. ``first_byte`` must exceed the slowest cold load."""

    connect: float = 5.0
    first_byte: float = 600.0
    idle: float = 120.0
    write: float = 30.0


def _fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class OllamaClient:
    """Talks to one Ollama server. Every method makes exactly one attempt (plus the reads it
    needs) and raises a subclass of ``StoryloomError``; ``.retryable`` says whether to retry.
    Generation is not idempotent in cost but is side-effect free; ``unload`` is idempotent.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeouts: OllamaTimeouts = OllamaTimeouts(),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            transport=transport,
            headers={"Accept": "application/json"},
            timeout=httpx.Timeout(
                connect=timeouts.connect, read=timeouts.first_byte, write=timeouts.write,
                pool=timeouts.connect,
            ),
        )
        self.capabilities = CapabilityCache(self.show)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- requests -------------------------------------------------------------------------

    def _site(self, path: str, model: str = "") -> CallSite:
        return CallSite(
            self.base_url + path, model, first_byte_s=self.timeouts.first_byte,
            idle_s=self.timeouts.idle,
        )

    async def _raise_for(self, status: int, body: bytes, site: CallSite) -> None:
        if status < 400:
            return
        _, is_json = error_text(body)
        if status == 404 and is_json and site.model:
            installed: list[str] = []
            try:
                installed = [m.full_name for m in await self.list_models()]
            except StoryloomError:
                logger.debug("could not list installed models", exc_info=True)
            raise ModelNotFound(site.model, installed, service=SERVICE, where=site.where,
                                status=404)
        raise from_status(status, body, site)

    async def _json(self, method: str, path: str, body: Any = None, model: str = "") -> Any:
        site = self._site(path, model)
        extra = {"model": model} if model else {}
        with CallTimer(SERVICE, method, site.url, extra=extra) as t, translated(site):
            resp = await self._http.request(method, path, json=body)
            site.phase = "body"
            t.status = resp.status_code
            await self._raise_for(resp.status_code, resp.content, site)
            try:
                return resp.json()
            except ValueError as exc:
                raise ServerError(f"reply is not JSON: {resp.text[:200]!r}", service=SERVICE,
                                  where=site.where, status=resp.status_code) from exc

    # ---- generation -----------------------------------------------------------------------

    async def generate_stream(
        self, model: str, prompt: str, *, system: str | None = None, seed: int | None = None,
        temperature: float | None = None, options: dict[str, Any] | None = None,
        format: str | dict[str, Any] | None = None, keep_alive: str | float | None = None,
        think: ThinkChoice = "auto",
    ) -> AsyncGenerator[GenerateChunk, None]:
        """Yield each line; the last has ``done``. Raises TruncatedStream at EOF without it,
        ServerError on an error line. Closing the iterator early cancels the generation.
        ``think`` as in ``activities.ollama.thinking`` (one cached /api/show per model)."""
        body = generate_body(self.base_url, model, prompt, stream=True, system=system, seed=seed,
                          temperature=temperature, options=options, format=format,
                          keep_alive=keep_alive)
        await self._add_think(body, model, think)
        site = self._site("/api/generate", model)
        extra = {"model": model, "prompt_chars": len(prompt), "prompt_sha": _fingerprint(prompt)}
        logger.debug("generate_stream prompt for %s: %s", model, prompt)
        with CallTimer(SERVICE, "POST", site.url, extra=extra) as timer, translated(site):
            site.phase = "headers"
            async with self._http.stream("POST", "/api/generate", json=body) as resp:
                site.phase = "body"
                timer.status = resp.status_code
                if resp.status_code >= 400:
                    await self._raise_for(resp.status_code, await resp.aread(), site)
                # The headers came within ``first_byte`` (a cold load); from now on every socket
                # read waits at most ``idle``, the gap between chunks. httpcore reads this
                # per-request timeout when the body starts, so no timer runs per line.
                resp.request.extensions["timeout"]["read"] = self.timeouts.idle
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue  # Ollama never sends blank lines, a proxy might
                    chunk = self._chunk(line, site)
                    if chunk.done:
                        extra.update(eval_count=chunk.eval_count, done_reason=chunk.done_reason)
                    yield chunk
                    if chunk.done:
                        return
                raise TruncatedStream(
                    "the stream ended without its final line", service=SERVICE,
                    where=site.where, hint="Ollama or a proxy cut the answer; retried",
                )

    def _chunk(self, line: str, site: CallSite) -> GenerateChunk:
        try:
            chunk = GenerateChunk.model_validate_json(line)
        except ValidationError as exc:
            raise TruncatedStream(f"unreadable stream line: {line[:120]!r}", service=SERVICE,
                                  where=site.where) from exc
        if chunk.error:
            raise ServerError(f"the model failed mid-answer: {chunk.error}", service=SERVICE,
                              where=site.where, status=200, hint="Retried from the start")
        return chunk

    async def _add_think(self, body: dict[str, Any], model: str, think: ThinkChoice) -> None:
        """Set ``body["think"]`` from the model's capabilities (after the local checks)."""
        caps = await self.capabilities.of(model) if think is not None else None
        value = think_field(think, caps, model=model, where=self.base_url + "/api/generate")
        if value is not None:
            body["think"] = value

    async def show(self, model: str) -> dict[str, Any]:
        """``/api/show`` for ``model``; ModelNotFound (final) when it is not installed."""
        data = await self._json("POST", "/api/show", {"model": model}, model)
        return data if isinstance(data, dict) else {}

    async def generate(
        self, model: str, prompt: str, *, think: ThinkChoice = "auto", **kw: Any
    ) -> GenerateResult:
        """The whole answer in one reply (``stream: false``); ``think`` as in generate_stream."""
        body = generate_body(self.base_url, model, prompt, stream=False, **kw)
        await self._add_think(body, model, think)
        logger.debug("generate prompt for %s: %s", model, prompt)
        site = self._site("/api/generate", model)
        extra = {"model": model, "prompt_chars": len(prompt), "prompt_sha": _fingerprint(prompt)}
        with CallTimer(SERVICE, "POST", site.url, extra=extra) as timer, translated(site):
            site.phase = "headers"
            resp = await self._http.post("/api/generate", json=body)
            site.phase = "body"
            timer.status = resp.status_code
            await self._raise_for(resp.status_code, resp.content, site)
            try:
                chunk = GenerateChunk.model_validate_json(resp.content)
            except ValidationError as exc:
                raise ServerError(f"reply is not a generate object: {resp.text[:200]!r}",
                                  service=SERVICE, where=site.where) from exc
            extra.update(eval_count=chunk.eval_count, done_reason=chunk.done_reason)
        return GenerateResult(
            model=chunk.model, text=chunk.response, thinking=chunk.thinking or "",
            **chunk.model_dump(include={"done_reason", "prompt_eval_count", "eval_count",
                                        "total_duration", "load_duration", "eval_duration"}),
        )

    async def generate_json(
        self, model: str, prompt: str, model_cls: type[T], *, schema: dict[str, Any] | None = None,
        seed: int | None = None, temperature: float = 0.0,
    ) -> T:
        """Structured output: the schema goes in ``format``; the reply string is parsed leniently
        (fenced, string-wrapped or inside prose, when unambiguous) and validated. Raises
        StructuredOutputError (final) saying what did not fit, EmptyAnswer (final) when no text
        came back (e.g. all of it in ``thinking``)."""
        schema = schema or model_cls.model_json_schema()
        if "json" not in prompt.lower():
            prompt += "\n\nAnswer with JSON only."
        result = await self.generate(model, prompt, format=schema, seed=seed,
                                     temperature=temperature)
        where = f"{self.base_url}/api/generate model={model}"
        if result.truncated:
            raise StructuredOutputError(
                f"the JSON answer was cut at the token limit ({result.eval_count} tokens)",
                service=SERVICE, where=where, hint="Raise num_predict or shorten the input")
        require_text(result.text, thinking=result.thinking, done_reason=result.done_reason,
                     where=where)
        return parse_structured(result.text, model_cls, where=where)

    # ---- embeddings, models, liveness -----------------------------------------------------

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """L2-normalised vectors in input order; falls back to /api/embeddings on old servers."""
        try:
            reply = EmbedResponse.model_validate(
                await self._json("POST", "/api/embed", {"model": model, "input": texts}, model))
            vectors = reply.embeddings
        except BadRequest as exc:
            if exc.status != 404:
                raise
            vectors = []
            for text in texts:
                old = EmbeddingsResponse.model_validate(await self._json(
                    "POST", "/api/embeddings", {"model": model, "prompt": text}, model))
                norm = math.sqrt(sum(v * v for v in old.embedding)) or 1.0
                vectors.append([v / norm for v in old.embedding])
        if len(vectors) != len(texts):
            raise ServerError(f"asked for {len(texts)} vectors, got {len(vectors)}",
                              service=SERVICE, where=f"{self.base_url}/api/embed model={model}")
        return vectors

    async def list_models(self) -> list[ModelInfo]:
        data = await self._json("GET", "/api/tags")
        return [ModelInfo.model_validate(m) for m in (data or {}).get("models") or []]

    async def loaded_models(self) -> list[LoadedModel]:
        data = await self._json("GET", "/api/ps")
        return [LoadedModel.model_validate(m) for m in (data or {}).get("models") or []]

    async def unload(self, model: str, *, deadline_s: float = 30.0, poll_s: float = 0.25) -> None:
        """Ask Ollama to unload ``model`` and wait until /api/ps no longer lists it.
        Idempotent; raises ServiceTimeout (retryable) if it is still loaded at the deadline."""
        caps = await self.capabilities.of(model)  # cached: one /api/show per model
        if caps is not None and "embedding" in caps and "completion" not in caps:
            # An embedding model "does not support generate": /api/embed unloads it the same way.
            await self._json("POST", "/api/embed", {"model": model, "keep_alive": 0}, model)
        else:
            try:
                await self._json("POST", "/api/generate",
                                 {"model": model, "prompt": "", "keep_alive": 0, "stream": False},
                                 model)
            except BadRequest as exc:  # a server too old to list capabilities
                if exc.status == 404:
                    raise
                await self._json("POST", "/api/embed", {"model": model, "keep_alive": 0}, model)
        wanted = normalise_name(model)
        give_up = time.monotonic() + deadline_s
        while any(normalise_name(m.full_name) == wanted for m in await self.loaded_models()):
            if time.monotonic() >= give_up:
                raise ServiceTimeout(
                    f"model still loaded {deadline_s:g} s after the unload request",
                    service=SERVICE, where=f"{self.base_url}/api/ps model={model}",
                    hint="A long request may still be running on it; retried later")
            await asyncio.sleep(poll_s)

    async def version(self) -> str:
        data = await self._json("GET", "/api/version")
        return str((data or {}).get("version", ""))

    async def ping(self) -> bool:
        """True when ``HEAD /`` answers 200; never raises."""
        try:
            with translated(self._site("/")):
                resp = await self._http.head("/")
        except StoryloomError:
            return False
        return resp.status_code == 200
