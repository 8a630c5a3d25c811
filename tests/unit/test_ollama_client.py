"""OllamaClient against the emulator over real sockets: bodies sent, replies read, errors typed."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tracemalloc
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from activities.errors import (
    BadRequest,
    ModelNotFound,
    ServerError,
    ServiceBusy,
    ServiceTimeout,
    ServiceUnavailable,
    StoryloomError,
    StructuredOutputError,
    TruncatedStream,
)
from activities.ollama.client import OllamaClient, OllamaTimeouts
from emulators.ollama import OllamaEmulator
from tests.fixtures.common import free_port, wait_until
from workflows_temporal.contracts import SceneCast

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
async def client(ollama_emulator: OllamaEmulator) -> OllamaClient:
    async with OllamaClient(ollama_emulator.url) as c:
        yield c


async def _drain(client: OllamaClient, **kw: object) -> str:
    return "".join([c.response async for c in client.generate_stream("llama3.2", "x", **kw)])


async def test_stream_sends_options_nested_and_stream_explicit(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    chunks = [c async for c in client.generate_stream(
        "llama3.2", "a quiet harbor", system="be brief", seed=3, temperature=0.5,
        options={"num_ctx": 2048}, keep_alive="10m")]
    assert ollama_emulator.requests[-1] == ("/api/generate", {
        "model": "llama3.2", "prompt": "a quiet harbor", "stream": True, "system": "be brief",
        "options": {"num_ctx": 2048, "seed": 3, "temperature": 0.5}, "keep_alive": "10m"})
    assert chunks[-1].done and chunks[-1].eval_count == len(chunks) - 1
    whole = await client.generate("llama3.2", "a quiet harbor", system="be brief", seed=3,
                                  temperature=0.5, options={"num_ctx": 2048}, keep_alive="10m")
    assert ollama_emulator.requests[-1][1]["stream"] is False
    assert whole.text == "".join(c.response for c in chunks) and whole.done_reason == "stop"
    assert whole.eval_count == chunks[-1].eval_count and not whole.truncated


async def test_invalid_options_are_refused_locally(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    for kw in ({"options": {"temprature": 0.1}}, {"options": {"num_ctx": "big"}},
               {"keep_alive": "300"}, {"format": 5}):
        with pytest.raises(BadRequest) as info:
            await client.generate("llama3.2", "x", **kw)
        assert info.value.retryable is False
    assert ollama_emulator.requests == []


async def test_unknown_model_lists_installed_models(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    ollama_emulator.set_faults({"missing_models": ["qwen3"]})
    for call in (client.generate("llama9", "x"), _drain_model(client, "qwen3")):
        with pytest.raises(ModelNotFound) as info:
            await call
        err = info.value
        assert err.retryable is False and err.status == 404 and err.service == "ollama"
        assert "llama3.2:latest" in err.installed and "qwen3:latest" not in err.installed
        assert "ollama pull" in err.describe() and ollama_emulator.url in err.where


async def _drain_model(client: OllamaClient, model: str) -> None:
    async for _ in client.generate_stream(model, "x"):
        pass


async def test_server_side_400_is_final(client: OllamaClient) -> None:
    with pytest.raises(BadRequest) as info:
        await client.generate("bad name", "x")
    assert info.value.status == 400 and info.value.retryable is False


async def test_wrong_base_url_is_a_final_bad_request(ollama_emulator: OllamaEmulator) -> None:
    async with OllamaClient(ollama_emulator.url + "/v9") as wrong:
        with pytest.raises(BadRequest) as info:
            await wrong.generate("llama3.2", "x")
    assert info.value.status == 404 and not info.value.retryable


async def test_connection_refused_is_retryable_unavailable() -> None:
    async with OllamaClient(f"http://127.0.0.1:{free_port()}") as dead:
        with pytest.raises(ServiceUnavailable) as info:
            await dead.generate("llama3.2", "x")
        assert info.value.retryable and isinstance(info.value.__cause__, httpx.ConnectError)
        assert await dead.ping() is False


@pytest.mark.parametrize(("faults", "stream", "error", "status"), [
    ({"busy_next": 1}, True, ServiceBusy, 503),
    ({"busy_next": 1}, False, ServiceBusy, 503),
    ({"fail_load": "llama-server process has terminated: exit status 2"}, True, ServerError, 500),
    ({"error_after_tokens": 0}, True, ServerError, 500),
    ({"error_after_tokens": 4}, True, ServerError, 200),
    ({"error_after_tokens": 4}, False, ServerError, 500),
    ({"truncate_after_tokens": 4}, True, TruncatedStream, None),
    ({"reset_after_tokens": 4}, True, TruncatedStream, None),
    ({"reset_after_tokens": 0}, True, ServiceUnavailable, None),
    ({"reset_after_tokens": 0}, False, ServiceUnavailable, None),
])
async def test_faults_become_retryable_typed_errors(
    ollama_emulator: OllamaEmulator, client: OllamaClient, faults: dict[str, object], stream: bool,
    error: type[StoryloomError], status: int | None,
) -> None:
    ollama_emulator.set_faults(faults)
    with pytest.raises(error) as info:
        if stream:
            await _drain(client)
        else:
            await client.generate("llama3.2", "x")
    assert type(info.value) is error and info.value.retryable is True
    assert info.value.status == status


async def test_first_byte_timeout_covers_the_load_not_the_idle_gap(
    ollama_emulator: OllamaEmulator,
) -> None:
    ollama_emulator.set_faults({"load_delay": 60})  # 0.6 s cold load, longer than idle
    patient = OllamaClient(ollama_emulator.url, timeouts=OllamaTimeouts(first_byte=5, idle=0.3))
    async with patient:
        assert (await _drain(patient)).strip()
    ollama_emulator.set_faults({"load_delay": 200})
    await patient_unload(ollama_emulator)
    async with OllamaClient(ollama_emulator.url,
                            timeouts=OllamaTimeouts(first_byte=0.3, idle=5)) as hasty:
        with pytest.raises(ServiceTimeout) as info:
            await _drain(hasty)
        assert "first-byte" in info.value.message and info.value.retryable
        assert await hasty.loaded_models() == []  # the disconnect aborted the cold load


async def patient_unload(emulator: OllamaEmulator) -> None:
    async with OllamaClient(emulator.url) as c:
        await c.unload("llama3.2", deadline_s=5, poll_s=0.02)


async def test_idle_timeout_fires_on_a_stalled_stream(ollama_emulator: OllamaEmulator) -> None:
    ollama_emulator.set_faults({"token_delay": 100})  # 1 s between chunks
    async with OllamaClient(ollama_emulator.url,
                            timeouts=OllamaTimeouts(first_byte=5, idle=0.3)) as c:
        seen: list[str] = []
        with pytest.raises(ServiceTimeout) as info:
            async for chunk in c.generate_stream("llama3.2", "x"):
                seen.append(chunk.response)
    assert len(seen) == 1 and "middle of a stream" in info.value.message
    assert info.value.retryable


class Shout(BaseModel):
    word: str
    loudness: int


async def test_generate_json_happy_path_and_mismatch(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    text = "On the pier, young Ada met the smuggler Corvin under the gulls."
    cast = await client.generate_json("llama3.2", f"Characters of: {text}", SceneCast, seed=1)
    assert [c.name for c in cast.characters] == ["Ada", "Corvin"]
    assert all(c.look for c in cast.characters) and cast.setting
    sent = ollama_emulator.requests[-1][1]
    assert sent["format"] == SceneCast.model_json_schema() and sent["stream"] is False
    assert sent["options"] == {"seed": 1, "temperature": 0.0}
    with pytest.raises(StructuredOutputError) as info:
        await client.generate_json("llama3.2", "shout", Shout,
                                   schema={"type": "object", "properties": {"word": {"type": "string"}}})
    assert "loudness" in info.value.message and info.value.retryable is False


async def test_embed_batch_is_normalised_and_ordered(client: OllamaClient) -> None:
    texts = ["a red door", "a red door opens", "quarterly tax report"]
    vectors = await client.embed("all-minilm", texts)
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1) < 1e-9 for v in vectors)
    assert vectors == await client.embed("all-minilm", texts)


async def test_embed_falls_back_to_the_legacy_route_on_old_servers() -> None:
    seen: list[str] = []

    def old_server(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/api/embed":
            return httpx.Response(404, text="404 page not found")
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(200, json={"embedding": [3.0, 4.0 * len(prompt)]})

    async with OllamaClient("http://ollama.test", transport=httpx.MockTransport(old_server)) as c:
        vectors = await c.embed("all-minilm", ["a", "bb"])
    assert seen == ["/api/embed", "/api/embeddings", "/api/embeddings"]
    assert vectors == [[0.6, 0.8], [3 / 73**0.5, 8 / 73**0.5]]


async def test_unload_waits_until_ps_no_longer_lists_the_model(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    await client.generate("llama3.2", "warm up")
    assert [m.full_name for m in await client.loaded_models()] == ["llama3.2:latest"]
    ollama_emulator.set_faults({"unload_lag": 20})  # listed 0.2 s after the reply
    before = len(ollama_emulator.requests)
    await client.unload("llama3.2", poll_s=0.02)
    assert await client.loaded_models() == []
    sent = [r for r in ollama_emulator.requests[before:] if r[0] != "/api/show"]
    assert sent[0] == (
        "/api/generate", {"model": "llama3.2", "prompt": "", "keep_alive": 0, "stream": False})
    assert [p for p, _ in sent[1:]].count("/api/ps") >= 3  # the first polls still saw it


async def test_unload_of_an_embedding_model_frees_it_too(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    """Issue 13: before a render the GPU scheduler unloads every model /api/ps lists; an
    embedding model refuses /api/generate (HTTP 400), so it is unloaded through /api/embed."""
    await client.embed("all-minilm", ["warm up"])
    assert [m.full_name for m in await client.loaded_models()] == ["all-minilm:latest"]
    before = len(ollama_emulator.requests)
    await client.unload("all-minilm:latest", deadline_s=5, poll_s=0.02)
    assert await client.loaded_models() == []
    # Known as an embedding model (its capabilities): no refused /api/generate, which would
    # print a warning on the demo's screen before every render.
    assert "/api/generate" not in [p for p, _ in ollama_emulator.requests[before:]]


async def test_unload_past_its_deadline_is_a_retryable_timeout(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    await client.generate("llama3.2", "warm up")
    ollama_emulator.set_faults({"unload_lag": 1000})
    with pytest.raises(ServiceTimeout) as info:
        await client.unload("llama3.2", deadline_s=0.2, poll_s=0.05)
    assert info.value.retryable and "still loaded" in info.value.message


async def test_meta_calls(client: OllamaClient) -> None:
    assert await client.version() == "0.33.0" and await client.ping() is True
    names = [m.full_name for m in await client.list_models()]
    assert names == ["llama3.2:latest", "qwen3:latest", "all-minilm:latest"]


async def test_calls_are_logged_without_the_prompt(
    client: OllamaClient, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="storyloom.calls"):
        await client.generate("llama3.2", "the secret plan of Zed")
    record = caplog.records[-1]
    assert "secret" not in record.getMessage() and "secret" not in json.dumps(record.call)
    assert record.call["prompt_chars"] == 22 and record.call["status"] == 200


async def test_ten_megabyte_stream_in_bounded_memory() -> None:
    # The emulator runs in its own process (through `serve`), so tracemalloc sees only the client.
    port = free_port()
    faults = {"response_tokens": 2_500_000, "tokens_per_chunk": 400}  # ~11 MB of prose
    code = (f"import asyncio; from emulators.ollama import serve; "
            f"asyncio.run(serve('127.0.0.1', {port}, faults={faults!r}))")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, cwd=ROOT)
    try:
        async with OllamaClient(f"http://127.0.0.1:{port}") as client:
            await wait_until(client.ping, timeout=20, what="emulator subprocess")
            total = longest = lines = 0
            tracemalloc.start()
            try:
                async for chunk in client.generate_stream("llama3.2", "a long voyage"):
                    total += len(chunk.response)
                    longest = max(longest, len(chunk.response))
                    lines += 1
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    finally:
        proc.terminate()
        await proc.wait()
    assert total > 10_000_000 and lines > 4000 and longest < 10_000
    assert peak < 2_000_000, f"peak {peak} bytes for a {total}-byte answer"


async def test_html_502_from_a_proxy_is_retryable_busy_with_the_raw_text(
    ollama_emulator: OllamaEmulator, client: OllamaClient,
) -> None:
    ollama_emulator.set_faults({"proxy_502_next": 2})
    with pytest.raises(ServiceBusy) as whole:
        await client.generate("llama3.2", "x")
    with pytest.raises(ServiceBusy) as streamed:
        await _drain(client)
    for err in (whole.value, streamed.value):
        assert err.retryable and err.status == 502 and "502 Bad Gateway" in str(err)
    assert (await client.generate("llama3.2", "x")).done_reason == "stop"
