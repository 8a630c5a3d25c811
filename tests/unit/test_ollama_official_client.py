"""The emulator satisfies the official `ollama` Python client 0.6.3 (protocol §12)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest

from emulators.ollama import OllamaEmulator


@pytest.fixture
async def official(ollama_emulator: OllamaEmulator) -> AsyncIterator[ollama.AsyncClient]:
    client = ollama.AsyncClient(host=ollama_emulator.url, timeout=httpx.Timeout(10.0))
    try:
        yield client
    finally:
        await client._client.aclose()  # the official client has no public close


async def test_list_show_and_ps(official: ollama.AsyncClient) -> None:
    listed = await official.list()
    assert [m.model for m in listed.models] == ["llama3.2:latest", "qwen3:latest", "all-minilm:latest"]
    assert listed.models[0].modified_at is not None and listed.models[0].details.family == "llama"
    shown = await official.show("qwen3")
    assert "thinking" in (shown.capabilities or []) and shown.modelinfo
    assert (await official.ps()).models == []


async def test_generate_whole_and_streamed_agree(official: ollama.AsyncClient) -> None:
    whole = await official.generate(model="llama3.2", prompt="a fox at the gate",
                                    options={"seed": 4})
    assert whole.done and whole.done_reason == "stop" and whole.eval_count
    parts = [p async for p in await official.generate(
        model="llama3.2", prompt="a fox at the gate", options={"seed": 4}, stream=True)]
    assert "".join(p.response for p in parts) == whole.response and parts[-1].done
    assert [m.model for m in (await official.ps()).models] == ["llama3.2:latest"]


async def test_chat_and_embed(official: ollama.AsyncClient) -> None:
    reply = await official.chat(model="qwen3", messages=[{"role": "user", "content": "hello"}])
    assert reply.message.role == "assistant" and reply.message.content and reply.message.thinking
    vectors = await official.embed(model="all-minilm", input=["one", "two"])
    assert len(vectors.embeddings) == 2 and len(vectors.embeddings[0]) == 384
    legacy = await official.embeddings(model="all-minilm", prompt="one")
    assert len(legacy.embedding) == 384


async def test_unload_removes_the_model_from_ps(official: ollama.AsyncClient) -> None:
    await official.generate(model="llama3.2", prompt="")
    assert len((await official.ps()).models) == 1
    reply = await official.generate(model="llama3.2", prompt="", keep_alive=0)
    assert reply.done_reason == "unload"
    assert (await official.ps()).models == []


async def test_unknown_model_is_a_404_response_error(official: ollama.AsyncClient) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        await official.generate(model="nope", prompt="x")
    assert info.value.status_code == 404 and info.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError) as streamed:
        async for _ in await official.chat(model="nope", messages=[], stream=True):
            pass
    assert streamed.value.status_code == 404


async def test_mid_stream_error_is_a_response_error_without_status(
    ollama_emulator: OllamaEmulator, official: ollama.AsyncClient,
) -> None:
    ollama_emulator.set_faults({"error_after_tokens": 2})
    got: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        async for part in await official.generate(model="llama3.2", prompt="x", stream=True):
            got.append(part.response)
    assert info.value.status_code == -1 and "error was encountered" in info.value.error
    assert len(got) == 2


async def test_no_header_arrives_before_the_first_token_under_a_load_delay(
    ollama_emulator: OllamaEmulator,
) -> None:
    # Protocol §4 rule 1: nothing, not even the status line, before the first chunk exists.
    ollama_emulator.set_faults({"load_delay": 100, "prompt_delay": 50})  # 1 s + 0.5 s (scaled)
    loop = asyncio.get_running_loop()
    seen: list[tuple[float, int, int]] = []

    async def on_headers(response: httpx.Response) -> None:
        stats = ollama_emulator.stats
        seen.append((loop.time(), stats["loads"], stats.get("generations", 0)))

    client = ollama.AsyncClient(host=ollama_emulator.url, timeout=httpx.Timeout(10.0),
                                event_hooks={"response": [on_headers]})
    try:
        for model, think in (("llama3.2", None), ("qwen3", True)):
            ollama_emulator.core.models.loaded.clear()  # cold again: pay the load delay
            seen.clear()
            sent = loop.time()
            stream = await client.generate(model=model, prompt="a fox", stream=True, think=think)
            first = await anext(aiter(stream))
            assert first.response or first.thinking
            (at, loads, generations), = seen
            assert at - sent >= 1.5 * 0.99  # headers came after the load and the prompt
            assert loads >= 1 and generations >= 1  # ...once the model had its first chunk
            async for _ in stream:
                pass
    finally:
        await client._client.aclose()


async def test_a_thinking_model_can_answer_only_in_thinking(
    ollama_emulator: OllamaEmulator, official: ollama.AsyncClient,
) -> None:
    ollama_emulator.set_faults({"answer_in_thinking": ["qwen3"]})
    parts = [p async for p in await official.generate(
        model="qwen3", prompt="a fox", format="json", stream=True)]
    assert parts[-1].done and "".join(p.response for p in parts) == ""
    assert "".join(p.thinking or "" for p in parts).count("{") >= 1
    told = await official.generate(model="qwen3", prompt="a fox", format="json", think=False)
    assert told.response.startswith("{") and not told.thinking
