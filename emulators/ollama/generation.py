"""/api/generate and /api/chat in the emulator: load/unload, then the answer, streamed or whole
(the request checks live in ``requests``)."""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

from aiohttp import web

from emulators.ollama import wire
from emulators.ollama.prose import prose_sentences, prose_tokens, seed_of, split_tokens
from emulators.ollama.requests import Job, admit_request
from emulators.ollama.shapes import fill_schema, wrap_structured
from emulators.ollama.state import Core

__all__ = ["handle_generation"]

# options that cut or place the answer but do not change which words are drawn
_NOT_SAMPLING = {"stop", "num_predict", "num_ctx", "num_batch", "num_gpu", "num_thread",
                 "main_gpu", "use_mmap", "num_keep"}
_RUN_ERROR = "an error was encountered while running the model: unexpected EOF"


def _shape(job: Job, text: str = "", thinking: str = "") -> dict[str, Any]:
    line: dict[str, Any] = {"model": job.sent_model, "created_at": wire.created_at()}
    if job.chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if thinking:
            message["thinking"] = thinking
        line["message"] = message
    else:
        line["response"] = text
        if thinking:
            line["thinking"] = thinking
    return line


def _batches(core: Core, job: Job) -> Iterator[tuple[str, list[str]]]:
    """("thinking"|"text", tokens) batches, deterministic in model, prompt, format, sampling."""
    sampling = {k: v for k, v in job.options.items() if k not in _NOT_SAMPLING}
    seed = seed_of(job.spec.full_name, job.prompt, job.fmt, sampling)
    # the ``answer_in_thinking`` habit: a thinking model puts its answer in `thinking` too
    answer = "thinking" if job.think and (
        job.spec.full_name in core.names("answer_in_thinking")) else "text"
    if job.think:
        wanted = random.Random(seed ^ 0x5EED).randint(12, 30)
        yield "thinking", list(islice(prose_tokens(seed ^ 0x7417, "think " + job.prompt), wanted))
    if job.fmt:
        value = json.dumps(fill_schema(seed, job.prompt, job.fmt), ensure_ascii=False)
        yield answer, split_tokens(wrap_structured(value, core.faults.get("structured_wrap")))
        return
    left = int(core.faults.get("response_tokens") or random.Random(seed).randint(120, 200))
    for sentence in prose_sentences(seed, job.prompt):  # whole sentences: never a cut word
        if left <= 0:
            return
        left -= len(sentence)
        yield answer, sentence


def _cut_at_stop(batch: list[str], stops: list[str], tail: str) -> tuple[list[str], str, bool]:
    """Tokens before the first stop string (the slow path, only when ``stop`` is set)."""
    kept: list[str] = []
    for tok in batch:
        window = tail + tok
        hits = [i for i in (window.find(s) for s in stops) if i >= 0]
        if hits:
            part = window[len(tail):min(hits)] if min(hits) >= len(tail) else ""
            return kept + ([part] if part else []), tail, True
        kept.append(tok)
        tail = window[-max(len(s) for s in stops):]
    return kept, tail, False


def _chunks(core: Core, job: Job, result: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Lines of ``tokens_per_chunk`` tokens, cut by num_predict (reason length) and ``stop``."""
    cap = job.options.get("num_predict")
    cap = int(cap) if isinstance(cap, (int, float)) and cap >= 0 else None
    stops = [s for s in job.options.get("stop") or [] if s]
    per_line = max(1, int(core.faults.get("tokens_per_chunk", 1)))
    tail, emitted, open_kind = "", 0, "text"
    group: list[str] = []
    result["reason"] = "stop"
    for kind, batch in _batches(core, job):
        stopped = False
        if cap is not None:
            if emitted >= cap:
                result["reason"] = "length"
                break
            batch = batch[: cap - emitted]
        if kind == "text" and stops:
            batch, tail, stopped = _cut_at_stop(batch, stops, tail)
        if group and kind != open_kind:
            yield open_kind, "".join(group)
            group = []
        open_kind = kind
        emitted += len(batch)
        result["ids"].extend(batch)
        group.extend(batch)
        while len(group) >= per_line:
            yield kind, "".join(group[:per_line])
            group = group[per_line:]
        if stopped:
            break
    if group:
        yield open_kind, "".join(group)
    result["eval_count"] = emitted


def _final(job: Job, result: dict[str, Any], prompt_ids: list[int]) -> dict[str, Any]:
    line = _shape(job)
    line.update(done=True, done_reason=result["reason"])
    if not job.chat and not job.raw:
        line["context"] = prompt_ids + [zlib.crc32(t.encode()) % 32000 for t in result["ids"]]
    now = time.monotonic()
    metrics = {
        "total_duration": int((now - job.started) * 1e9),
        "load_duration": int(result["load_s"] * 1e9),
        "prompt_eval_count": len(prompt_ids),
        "prompt_eval_duration": int(result["prompt_s"] * 1e9),
        "eval_count": result["eval_count"],
        "eval_duration": int((now - result["first_s"]) * 1e9),
    }
    line.update({k: v for k, v in metrics.items() if v})
    return line


async def _whole(core: Core, job: Job, request: web.Request, result: dict[str, Any],
                 prompt_ids: list[int]) -> web.StreamResponse:
    text: list[str] = []
    thinking: list[str] = []
    for kind, piece in _chunks(core, job, result):
        await core.pause("token_delay")
        (thinking if kind == "thinking" else text).append(piece)
    for fault in ("reset_after_tokens", "truncate_after_tokens"):
        if fault in core.faults and request.transport is not None:
            request.transport.abort()
            return web.Response()
    if "error_after_tokens" in core.faults:
        return wire.error(500, _RUN_ERROR)
    core.count("generations")
    line = _shape(job, "".join(text), "".join(thinking))
    final = _final(job, result, prompt_ids)
    for key in ("model", "created_at", "response", "message"):
        final.pop(key, None)
    line.update(final)
    return wire.json_response(line)


async def _streamed(core: Core, job: Job, request: web.Request, result: dict[str, Any],
                    prompt_ids: list[int]) -> web.StreamResponse:
    resp: web.StreamResponse | None = None
    sent = 0
    faults = core.faults

    def hit(fault: str) -> bool:
        return fault in faults and sent >= int(faults[fault])

    try:
        for kind, piece in _end_marked(_chunks(core, job, result)):
            if sent:
                await core.pause("token_delay")
            if hit("error_after_tokens"):
                if resp is None:
                    return wire.error(500, _RUN_ERROR)
                await resp.write(wire.ndjson_line({"error": _RUN_ERROR}))
                await resp.write_eof()
                return resp
            if hit("reset_after_tokens") and request.transport is not None:
                request.transport.abort()
                return resp or web.Response()
            if resp is None:
                resp = web.StreamResponse(headers={"Content-Type": wire.NDJSON_TYPE})
                resp.enable_chunked_encoding()
                await resp.prepare(request)  # headers only now that the first chunk exists
                core.count("generations")
            if hit("truncate_after_tokens"):
                await resp.write_eof()
                return resp
            if kind == "end":
                await resp.write(wire.ndjson_line(_final(job, result, prompt_ids)))
                await resp.write_eof()
                return resp
            line = _shape(job, piece if kind == "text" else "", piece if kind == "thinking" else "")
            line["done"] = False
            await resp.write(wire.ndjson_line(line))
            sent += 1
    except (ConnectionError, asyncio.CancelledError):
        core.count("disconnects")
        raise
    return resp or web.Response()


async def _empty_answer(
    core: Core, job: Job, request: web.Request, reason: str
) -> web.StreamResponse:
    """The ``empty_answers`` fault: a finished answer with no text and ``done_reason``.
    ``load``/``unload`` replies are one JSON object even when streamed (§2.5)."""
    core.count("generations")
    final = {**_shape(job), "done": True, "done_reason": reason}
    if not job.stream or reason in ("load", "unload"):
        return wire.json_response(final)
    resp = web.StreamResponse(headers={"Content-Type": wire.NDJSON_TYPE})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(wire.ndjson_line(final))
    await resp.write_eof()
    return resp


def _end_marked(chunks: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    yield from chunks
    yield "end", ""


async def handle_generation(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    """One generate or chat request, from validation to the done (or error) line."""
    started = time.monotonic()
    chat = request.path == "/api/chat"
    if not isinstance(body, dict):
        kind = "array" if isinstance(body, list) else "value"
        name = "ChatRequest" if chat else "GenerateRequest"
        return wire.error(400, f"json: cannot unmarshal {kind} into Go value of type api.{name}")
    job = admit_request(core, body, chat, started)
    if isinstance(job, web.Response):
        return job
    empty = not body.get("messages") if chat else not body.get("prompt")
    if empty and job.keep_alive == 0:
        core.models.unload(job.spec)
        core.count("unloads")
        return wire.json_response({**_shape(job), "done": True, "done_reason": "unload"})
    if "fail_load" in core.faults:
        return wire.error(500, str(core.faults["fail_load"]))
    if core.take_busy():
        return wire.error(503, "server busy, please try again.  maximum pending requests exceeded")
    num_ctx = int(job.options.get("num_ctx", job.spec.context_length))
    counted = core.models.admit(job.spec)
    if counted is None:
        return wire.error(503, "server busy, please try again.  maximum pending requests exceeded")
    async with core.models.slot(job.spec):
        try:
            await core.models.ensure_loaded(job.spec, num_ctx, job.keep_alive)
        finally:
            core.models.leave(counted)
        if empty:
            return wire.json_response({**_shape(job), "done": True, "done_reason": "load"})
        reason = core.take_empty_answer()
        if reason is not None:
            return await _empty_answer(core, job, request, reason)
        loaded_at = time.monotonic()
        await core.pause("prompt_delay")
        first = time.monotonic()
        prompt_ids = [zlib.crc32(t.encode()) % 32000 for t in split_tokens(job.prompt)]
        result: dict[str, Any] = {
            "load_s": loaded_at - started, "prompt_s": first - loaded_at,
            "first_s": first, "ids": deque(maxlen=max(num_ctx - len(prompt_ids), 0)),
        }
        prompt_ids = prompt_ids[-num_ctx:]
        try:
            if job.stream:
                return await _streamed(core, job, request, result, prompt_ids)
            return await _whole(core, job, request, result, prompt_ids)
        finally:
            if job.keep_alive == 0:
                core.models.unload(job.spec)
