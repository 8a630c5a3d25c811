"""Wire-level checks of the Ollama emulator against the protocol document, over raw httpx."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from emulators.ollama import OllamaEmulator
from tests.fixtures.common import wait_until

JSON_CT = "application/json; charset=utf-8"
CAST_SCHEMA = {
    "type": "object",
    "properties": {
        "characters": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "look": {"type": "string"}}, "required": ["name", "look"]}},
        "mood": {"enum": ["calm", "tense"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 3},
    },
    "required": ["characters", "mood", "count"],
}


@pytest.fixture
async def http(ollama_emulator: OllamaEmulator) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=ollama_emulator.url, timeout=10) as client:
        yield client


async def test_liveness_and_unknown_routes_answer_plain_text(http: httpx.AsyncClient) -> None:
    root = await http.get("/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    head = await http.head("/")
    assert head.status_code == 200 and head.content == b""
    missing = await http.get("/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    assert missing.headers["content-type"].startswith("text/plain")
    wrong = await http.delete("/api/tags")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
    version = await http.get("/api/version")
    assert version.headers["content-type"] == JSON_CT and version.content == b'{"version":"0.33.0"}'


async def test_whole_generate_is_one_compact_object_without_newline(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "A storm over the harbor",
                                               "stream": False})
    assert r.headers["content-type"] == JSON_CT
    assert not r.content.endswith(b"\n") and b": " not in r.content[:40]
    body = r.json()
    assert body["model"] == "llama3.2" and body["done"] is True and body["done_reason"] == "stop"
    assert body["created_at"].endswith("Z") and body["eval_count"] > 100
    assert len(body["response"].split()) > 60 and body["context"]


async def test_stream_is_ndjson_with_a_final_done_line(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/api/generate",
                           json={"model": "llama3.2", "prompt": "lanterns in fog"}) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        raw = await r.aread()
    lines = raw.split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1])  # every line ends in \n, no blank lines
    parsed = [json.loads(x) for x in lines[:-1]]
    assert all(p["done"] is False and "response" in p for p in parsed[:-1])
    final = parsed[-1]
    assert final["done"] is True and final["eval_count"] == len(parsed) - 1
    assert "done_reason" not in parsed[0] and "eval_count" not in parsed[0]


async def test_same_request_same_text_and_options_change_it(http: httpx.AsyncClient) -> None:
    body = {"model": "llama3.2", "prompt": "The keeper Mira climbs the tower", "stream": False,
            "options": {"seed": 7}}
    a = (await http.post("/api/generate", json=body)).json()["response"]
    b = (await http.post("/api/generate", json=body)).json()["response"]
    c = (await http.post("/api/generate", json={**body, "options": {"seed": 8}})).json()["response"]
    assert a == b and a != c and "Mira" in a + c


async def test_num_predict_and_stop_cut_the_answer(http: httpx.AsyncClient) -> None:
    capped = (await http.post("/api/generate", json={
        "model": "llama3.2", "prompt": "x", "stream": False, "options": {"num_predict": 5}})).json()
    assert capped["eval_count"] == 5 and capped["done_reason"] == "length"
    full = (await http.post("/api/generate", json={
        "model": "llama3.2", "prompt": "x", "stream": False})).json()["response"]
    stop = (await http.post("/api/generate", json={
        "model": "llama3.2", "prompt": "x", "stream": False, "options": {"stop": ["."]}})).json()
    assert stop["response"] == full[: full.index(".")] and stop["done_reason"] == "stop"


async def test_schema_format_gives_a_valid_json_string_naming_prompt_people(
    http: httpx.AsyncClient,
) -> None:
    prompt = "At the dock, old Jonas waved while Mira and Tobias argued."
    r = (await http.post("/api/generate", json={"model": "llama3.2", "prompt": prompt,
                                                "format": CAST_SCHEMA, "stream": False})).json()
    value = json.loads(r["response"])
    assert [c["name"] for c in value["characters"]] == ["Jonas", "Mira", "Tobias"]
    assert value["mood"] in ("calm", "tense") and 1 <= value["count"] <= 3
    bad = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "format": 5})
    assert bad.status_code == 500 and bad.json()["error"].startswith("invalid format")


async def test_thinking_model_thinks_before_answering(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/api/chat", json={
            "model": "qwen3", "messages": [{"role": "user", "content": "hi"}]}) as r:
        lines = [json.loads(x) async for x in r.aiter_lines()]
    assert "thinking" in lines[0]["message"] and lines[0]["message"]["content"] == ""
    assert any(x["message"]["content"] for x in lines[1:-1])
    assert "context" not in lines[-1]
    refused = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "think": True})
    assert refused.status_code == 400 and "does not support thinking" in refused.json()["error"]


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/generate", {"prompt": "x"}, 404, "model '' not found"),
    ("/api/chat", {"messages": []}, 400, "model is required"),
    ("/api/generate", {"model": "ghost", "prompt": "x"}, 404, "model 'ghost' not found"),
    ("/api/embed", {"model": "ghost", "input": "x"}, 404, 'model "ghost" not found, try pulling it first'),
    ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
    ("/api/show", {"model": "ghost"}, 404, "model 'ghost:latest' not found"),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "keep_alive": "300"}, 400,
     'time: missing unit in duration "300"'),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "keep_alive": True}, 400,
     "Unsupported type: 'bool'"),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "options": {"temperature": "hot"}}, 500,
     'option "temperature" must be of type float32'),
    ("/api/generate", {"model": "llama3.2", "prompt": "x", "stream": "yes"}, 400,
     "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool"),
])
async def test_error_catalogue(http: httpx.AsyncClient, path: str, body: dict[str, object],
                               status: int, message: str) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == status and r.headers["content-type"] == JSON_CT
    assert r.content == json.dumps({"error": message}, separators=(",", ":")).encode()


async def test_empty_and_malformed_bodies_are_400(http: httpx.AsyncClient) -> None:
    empty = await http.post("/api/generate", content=b"")
    assert (empty.status_code, empty.json()) == (400, {"error": "missing request body"})
    bad = await http.post("/api/generate", content=b"{nope")
    assert bad.status_code == 400 and "invalid character" in bad.json()["error"]


async def test_load_and_unload_are_single_objects_and_ps_follows(
    http: httpx.AsyncClient,
) -> None:
    load = await http.post("/api/generate", json={"model": "llama3.2", "prompt": ""})
    assert load.headers["content-type"] == JSON_CT
    assert load.json() | {"created_at": ""} == {"model": "llama3.2", "created_at": "",
                                               "response": "", "done": True, "done_reason": "load"}
    ps = (await http.get("/api/ps")).json()["models"]
    assert [m["name"] for m in ps] == ["llama3.2:latest"] and ps[0]["expires_at"]
    unload = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "",
                                                    "keep_alive": 0, "stream": True})
    assert unload.headers["content-type"] == JSON_CT and unload.json()["done_reason"] == "unload"
    assert (await http.get("/api/ps")).json() == {"models": []}


async def test_unload_lag_keeps_the_model_listed_for_a_while(
    ollama_emulator: OllamaEmulator, http: httpx.AsyncClient,
) -> None:
    ollama_emulator.set_faults({"unload_lag": 30})  # x0.01 = 0.3 s
    await http.post("/api/generate", json={"model": "llama3.2", "prompt": ""})
    await http.post("/api/generate", json={"model": "llama3.2", "prompt": "", "keep_alive": "0s"})
    assert len((await http.get("/api/ps")).json()["models"]) == 1

    async def gone() -> bool:
        return (await http.get("/api/ps")).json()["models"] == []

    await wait_until(gone, timeout=5, what="model leaves /api/ps")


async def test_busy_fault_gives_503_with_the_exact_text(
    ollama_emulator: OllamaEmulator, http: httpx.AsyncClient,
) -> None:
    r = await http.post("/_emulator/faults", json={"busy_next": 1})
    assert r.status_code == 200
    busy = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert busy.status_code == 503
    assert busy.json() == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    ok = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})
    assert ok.status_code == 200
    unknown = await http.post("/_emulator/faults", json={"explode": True})
    assert unknown.status_code == 400 and "explode" in unknown.json()["error"]


async def test_error_after_tokens_ends_the_stream_with_an_error_line(
    ollama_emulator: OllamaEmulator, http: httpx.AsyncClient,
) -> None:
    ollama_emulator.set_faults({"error_after_tokens": 3})
    async with http.stream("POST", "/api/generate", json={"model": "llama3.2", "prompt": "x"}) as r:
        lines = [json.loads(x) async for x in r.aiter_lines()]
    assert r.status_code == 200 and len(lines) == 4 and "error" in lines[-1]
    assert not any(x.get("done") for x in lines)
    whole = await http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})
    assert whole.status_code == 500 and "error" in whole.json()


async def test_embed_normalises_and_similar_texts_are_close(http: httpx.AsyncClient) -> None:
    r = (await http.post("/api/embed", json={"model": "all-minilm", "input": [
        "the red lighthouse at night", "the red lighthouse at dusk", "tax forms for accountants"]})).json()
    a, b, c = r["embeddings"]
    assert len(a) == 384 and abs(sum(x * x for x in a) - 1) < 1e-9
    dot = lambda u, v: sum(x * y for x, y in zip(u, v, strict=True))
    assert dot(a, b) > 0.5 > dot(a, c)
    legacy = (await http.post("/api/embeddings", json={"model": "all-minilm",
                                                       "prompt": "the red lighthouse at night"})).json()
    norm = sum(x * x for x in legacy["embedding"]) ** 0.5
    assert abs(norm - 1) > 0.1 and len(legacy["embedding"]) == 384


async def test_requests_and_stats_are_recorded(
    ollama_emulator: OllamaEmulator, http: httpx.AsyncClient,
) -> None:
    await http.post("/api/generate", json={"model": "llama3.2", "prompt": "hello", "stream": False})
    assert ollama_emulator.requests[-1] == ("/api/generate", {"model": "llama3.2", "prompt": "hello",
                                                              "stream": False})
    stats = (await http.get("/_emulator/stats")).json()
    assert stats["requests"] == 1 and stats["generations"] == 1
    remote = (await http.get("/_emulator/requests")).json()
    assert remote[-1]["body"]["prompt"] == "hello"


async def test_non_local_host_header_gets_an_empty_403(http: httpx.AsyncClient) -> None:
    for host in ("evil.example.com", "8.8.8.8:11434", "ollama.example.org:80"):
        r = await http.get("/api/tags", headers={"Host": host})
        assert (r.status_code, r.content) == (403, b""), host
    for host in ("localhost:11434", "box.local", "gpu.internal", "a.localhost", "10.1.2.3",
                 "[::1]:11434", "0.0.0.0"):
        r = await http.get("/api/tags", headers={"Host": host})
        assert r.status_code == 200, host


async def test_max_queue_refuses_requests_past_the_load_queue_with_503(
    ollama_emulator: OllamaEmulator, http: httpx.AsyncClient,
) -> None:
    ollama_emulator.set_faults({"load_delay": 100, "max_queue": 1})  # a cold load takes 1 s
    body = {"model": "llama3.2", "prompt": "x", "stream": False, "options": {"num_predict": 2}}
    first = asyncio.create_task(http.post("/api/generate", json=body))
    await wait_until(lambda: ollama_emulator.core.models.waiting == 1, what="first queued")
    overflow = await http.post("/api/generate", json=body)
    assert overflow.status_code == 503
    assert overflow.json() == {
        "error": "server busy, please try again.  maximum pending requests exceeded"}
    assert (await first).status_code == 200
    warm = await http.post("/api/generate", json=body)  # a loaded model bypasses the queue
    assert warm.status_code == 200 and ollama_emulator.core.models.waiting == 0


async def test_client_disconnect_mid_generation_frees_the_slot(
    ollama_emulator: OllamaEmulator,
) -> None:
    ollama_emulator.set_faults({"response_tokens": 2000, "token_delay": 1})  # 20 s in all
    body = {"model": "llama3.2", "prompt": "a long tale"}
    async with (
        httpx.AsyncClient(base_url=ollama_emulator.url, timeout=10) as first,
        first.stream("POST", "/api/generate", json=body) as r,
    ):
        assert json.loads(await anext(r.aiter_lines()))["done"] is False
    # the first answer would hold the model's only slot for ~20 s more
    async with httpx.AsyncClient(base_url=ollama_emulator.url, timeout=10) as second:
        short = {**body, "stream": False, "options": {"num_predict": 3}}
        r2 = await asyncio.wait_for(second.post("/api/generate", json=short), 5.0)
    assert r2.status_code == 200 and r2.json()["done"] is True
