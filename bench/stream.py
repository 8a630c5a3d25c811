"""``stream``: tokens per second parsed by our OllamaClient from a long emulator stream, ÷ the
official ``ollama`` AsyncClient's rate on the same stream, and ÷ a bare httpx line loop.

The stream is recorded once from the Ollama emulator (one token per line) and replayed by
``bench.replay`` in a subprocess, so every client reads the same bytes and the server never
limits the rate. Clients run in turn, interleaved, each repeat on a fresh connection.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import ollama

from activities.ollama.client import OllamaClient
from bench.lab import MODEL, get_lab
from bench.report import Result, spread

__all__ = ["record_stream", "replay_server", "stream"]

BODY: dict[str, Any] = {"model": MODEL, "prompt": "Tell a very long story about a fox.",
                        "stream": True}


async def record_stream(ollama_url: str, tokens: int, path: Path, per_line: int = 1) -> int:
    """Save the emulator's NDJSON answer of ``tokens`` tokens to ``path``; returns its lines."""

    async with httpx.AsyncClient(timeout=60.0) as http:
        faults = {"response_tokens": tokens, "tokens_per_chunk": per_line}
        (await http.post(ollama_url + "/_emulator/faults", json=faults)).raise_for_status()
        try:
            reply = await http.post(ollama_url + "/api/generate",
                                    json={**BODY, "options": {"num_predict": -1,
                                                              "num_ctx": tokens + 512}})
            reply.raise_for_status()
        finally:
            await http.post(ollama_url + "/_emulator/faults", json={})
        show = await http.post(ollama_url + "/api/show", json={"model": MODEL})
        show.raise_for_status()
    path.write_bytes(reply.content)
    show_path(path).write_bytes(show.content)
    return len(reply.content.splitlines())


def show_path(path: Path) -> Path:
    """Where ``record_stream`` keeps the model's ``/api/show`` answer beside the stream."""
    return path.with_suffix(".show.json")


async def replay_server(path: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.replay", str(path),  # noqa: ASYNC220
                             str(show_path(path))],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    port = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
    return proc, f"http://127.0.0.1:{int(port)}"


async def _ours(url: str) -> int:
    n = 0
    async with OllamaClient(url) as client:
        async for _chunk in client.generate_stream(MODEL, BODY["prompt"]):
            n += 1
    return n


async def _official(url: str) -> int:
    n = 0
    client = ollama.AsyncClient(host=url)
    async for _part in await client.generate(model=MODEL, prompt=BODY["prompt"], stream=True):
        n += 1
    return n


async def _bare(url: str) -> int:
    n = 0
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as http, \
            http.stream("POST", "/api/generate", json=BODY) as resp:
        async for line in resp.aiter_lines():
            if line:
                json.loads(line)
                n += 1
    return n


async def stream(quick: bool) -> list[Result]:
    lab = await get_lab(worker=False)
    tokens = 10_000 if quick else 40_000
    repeats = 3 if quick else 5
    path = lab.root / "stream.ndjson"
    lines = await record_stream(lab.ollama.url, tokens, path)
    proc, url = await replay_server(path)
    rates: dict[str, list[float]] = {"ours": [], "official": [], "bare": []}
    clients = {"ours": _ours, "official": _official, "bare": _bare}
    try:
        for name, fn in clients.items():  # warm-up: imports, first connection
            await fn(url)
        for i in range(repeats):
            order = list(clients) if i % 2 == 0 else list(reversed(clients))
            for name in order:
                started = time.perf_counter()
                got = await clients[name](url)
                rates[name].append(got / (time.perf_counter() - started))
                assert got == lines, (name, got, lines)
    finally:
        proc.kill()
        proc.wait(5)
    vs_official = [a / b for a, b in zip(rates["ours"], rates["official"], strict=True)]
    vs_bare = [a / b for a, b in zip(rates["ours"], rates["bare"], strict=True)]
    detail = {"lines": lines, "bytes": path.stat().st_size,
              "tokens_per_s": {k: [round(r) for r in v] for k, v in rates.items()}}
    med_o, rel_o = spread(vs_official)
    med_b, rel_b = spread(vs_bare)
    med_r, rel_r = spread(rates["ours"])
    return [
        Result("stream.vs_official", med_o, 1.0, "higher", "x", median=med_o, spread=rel_o,
               repeats=repeats, detail=detail),
        Result("stream.vs_bare_httpx", med_b, 0.8, "higher", "x", median=med_b, spread=rel_b,
               repeats=repeats),
        Result("stream.tokens_per_s", med_r, None, "higher", "/s", median=med_r, spread=rel_r,
               repeats=repeats),
    ]
