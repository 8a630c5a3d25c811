"""The emulator's non-generating endpoints: liveness, version, tags, ps, show and embeddings."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from emulators.ollama import wire
from emulators.ollama.catalogue import ModelSpec, valid_name
from emulators.ollama.shapes import embedding
from emulators.ollama.state import FOREVER, Core, parse_keep_alive

__all__ = ["VERSION", "embed", "embeddings", "ps", "root", "show", "tags", "version"]

VERSION = "0.33.0"
_FOREVER_ISO = "2318-03-31T07:00:00.000000000Z"  # ~292 years ahead, as Go's max duration


async def root(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    return wire.plain(200, "" if request.method == "HEAD" else "Ollama is running")


async def version(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    return wire.json_response({"version": VERSION})


async def tags(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    return wire.json_response({"models": [s.tag_entry() for s in core.models.installed()]})


def _expires(at: float) -> str:
    if at == FOREVER:
        return _FOREVER_ISO
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


async def ps(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    entries = []
    for loaded in core.models.running():
        entry = loaded.spec.tag_entry()
        entry.pop("modified_at", None)
        entry.update(
            expires_at=_expires(loaded.expires_at), size_vram=loaded.spec.size,
            context_length=loaded.num_ctx,
        )
        entries.append(entry)
    return wire.json_response({"models": entries})


async def show(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    if not isinstance(body, dict):
        return wire.error(400, "json: cannot unmarshal value into Go value of type api.ShowRequest")
    name = body.get("model") or body.get("name") or ""
    if not isinstance(name, str) or not name:
        return wire.error(400, "model is required")
    if not valid_name(name):
        return wire.error(400, "invalid model name")
    spec = core.models.lookup(name)
    if spec is None:
        return wire.error(404, f"model '{name if ':' in name else name + ':latest'}' not found")
    info_key = spec.family
    return wire.json_response({
        "modelfile": f"FROM {spec.full_name}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": spec.details(),
        "model_info": {
            "general.architecture": info_key,
            f"{info_key}.context_length": spec.context_length,
            f"{info_key}.embedding_length": spec.embedding_length,
        },
        "capabilities": list(spec.capabilities),
        "modified_at": spec.modified_at,
    })


async def _embed_common(
    core: Core, body: Any, model_required: str
) -> tuple[ModelSpec, float | None] | web.Response:
    if not isinstance(body, dict):
        return wire.error(400, "json: cannot unmarshal value into Go value of type api.EmbedRequest")
    model = body.get("model") or ""
    if not isinstance(model, str) or not model:
        return wire.error(*((404, "model '' not found") if model_required == "404"
                            else (400, "model is required")))
    if not valid_name(model):
        return wire.error(400, "invalid model name")
    spec = core.models.lookup(model)
    if spec is None:
        return wire.error(404, f'model "{model}" not found, try pulling it first')
    try:
        keep_alive = parse_keep_alive(body.get("keep_alive"))
    except ValueError as exc:
        return wire.error(400, str(exc))
    if core.take_busy():
        return wire.error(503, "server busy, please try again.  maximum pending requests exceeded")
    if "fail_load" in core.faults:
        return wire.error(500, str(core.faults["fail_load"]))
    return spec, keep_alive


def _dim(spec: ModelSpec) -> int:
    return spec.embedding_length if spec.is_embedding else min(spec.embedding_length, 1024)


async def embed(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    """/api/embed: a list of L2-normalised vectors in input order."""
    started = time.monotonic()
    checked = await _embed_common(core, body, "404")
    if isinstance(checked, web.Response):
        return checked
    spec, keep_alive = checked
    raw = body.get("input")
    if raw is None or raw == "" or raw == []:
        await core.models.ensure_loaded(spec, spec.context_length, keep_alive)
        return wire.json_response({"model": body["model"], "embeddings": []})
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        return wire.error(400, "invalid input type")
    if body.get("truncate") is False and any(len(t.split()) > spec.context_length for t in raw):
        return wire.error(400, "the input length exceeds the context length")
    load_s = await core.models.ensure_loaded(spec, spec.context_length, keep_alive)
    dim = _dim(spec)
    want = body.get("dimensions")
    vectors = [embedding(spec.full_name, t, dim, normalise=True) for t in raw]
    if isinstance(want, int) and 0 < want < dim:
        vectors = [_renorm(v[:want]) for v in vectors]
    metrics = {
        "total_duration": int((time.monotonic() - started) * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": sum(len(t.split()) for t in raw),
    }
    return wire.json_response(
        {"model": body["model"], "embeddings": vectors, **{k: v for k, v in metrics.items() if v}}
    )


def _renorm(vec: list[float]) -> list[float]:
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [v / norm for v in vec]


async def embeddings(core: Core, request: web.Request, body: Any) -> web.StreamResponse:
    """/api/embeddings (legacy): one vector, not normalised, no metrics."""
    checked = await _embed_common(core, body, "400")
    if isinstance(checked, web.Response):
        return checked
    spec, keep_alive = checked
    await core.models.ensure_loaded(spec, spec.context_length, keep_alive)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        return wire.error(400, "json: cannot unmarshal value into Go struct field "
                               "EmbeddingRequest.prompt of type string")
    if not prompt:
        return wire.json_response({"embedding": []})
    return wire.json_response(
        {"embedding": embedding(spec.full_name, prompt, _dim(spec), normalise=False)}
    )
