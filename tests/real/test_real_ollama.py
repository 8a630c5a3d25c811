"""OllamaClient against an Ollama server: our emulator always, a real one when configured.

Only what holds for any Ollama is asserted: shapes, types, error classes and whether they are
retryable, vector norms, model residency. Never exact texts (a real model writes what it
likes). See conftest.py for the variables that name a real server.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel, Field

from activities.errors import ModelNotFound, to_application_error
from activities.ollama.client import OllamaClient, OllamaTimeouts
from activities.ollama.payloads import normalise_name
from tests.real.conftest import OllamaTarget

TIMEOUTS = OllamaTimeouts(connect=5.0, first_byte=300.0, idle=120.0)
SHORT = {"num_predict": 24}


class Weather(BaseModel):
    """What generate_json must return for the structured-output test."""

    sky: str = Field(min_length=1)
    temperature_celsius: int


@pytest.fixture
async def ollama(ollama_target: OllamaTarget) -> AsyncIterator[OllamaClient]:
    async with OllamaClient(ollama_target.url, timeouts=TIMEOUTS) as client:
        yield client


async def test_liveness_version_and_installed_models(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    assert await ollama.ping() is True
    version = await ollama.version()
    assert version and version[0].isdigit()
    names = {normalise_name(m.full_name) for m in await ollama.list_models()}
    assert normalise_name(ollama_target.model) in names
    assert normalise_name(ollama_target.embed_model) in names


async def test_unknown_model_is_model_not_found_listing_installed_and_final(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    missing = f"storyloom-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ModelNotFound) as caught:
        await ollama.generate(missing, "hello", options=SHORT)
    err = caught.value
    assert err.status == 404 and not err.retryable
    assert to_application_error(err).non_retryable
    assert err.model == missing
    assert normalise_name(ollama_target.model) in {normalise_name(n) for n in err.installed}
    with pytest.raises(ModelNotFound):
        async for _ in ollama.generate_stream(missing, "hello", options=SHORT):
            pass


async def test_stream_completes_with_a_done_line(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    chunks = [c async for c in ollama.generate_stream(
        ollama_target.model, "Name one colour.", seed=7, temperature=0.0, options=SHORT)]
    assert chunks and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert chunks[-1].done_reason in ("stop", "length")
    assert isinstance(chunks[-1].eval_count, int) and chunks[-1].eval_count > 0
    text = "".join(c.response for c in chunks)
    assert text.strip() or any(c.thinking for c in chunks)
    whole = await ollama.generate(ollama_target.model, "Name one colour.", seed=7,
                                  temperature=0.0, options=SHORT)
    assert whole.done_reason in ("stop", "length") and isinstance(whole.eval_count, int)
    assert whole.truncated == (whole.done_reason == "length")


async def test_generate_json_returns_a_validated_model(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    result = await ollama.generate_json(
        ollama_target.model,
        "Describe today's weather in a small coastal town as JSON with the keys sky "
        "(a short phrase) and temperature_celsius (an integer).",
        Weather, seed=1)
    assert isinstance(result, Weather)
    assert result.sky.strip() and isinstance(result.temperature_celsius, int)


async def test_embed_gives_normalised_vectors_of_one_dimension(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    texts = ["a lighthouse keeper", "a storm at sea", "bread and cheese"]
    vectors = await ollama.embed(ollama_target.embed_model, texts)
    assert len(vectors) == len(texts)
    dims = {len(v) for v in vectors}
    assert len(dims) == 1 and dims.pop() > 8
    for vector in vectors:
        assert all(isinstance(x, float) for x in vector)
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, abs_tol=1e-3)
    again = await ollama.embed(ollama_target.embed_model, texts[:1])
    assert len(again[0]) == len(vectors[0])
    assert sum(a * b for a, b in zip(again[0], vectors[0], strict=True)) > 0.99


async def test_unload_leaves_api_ps(ollama_target: OllamaTarget, ollama: OllamaClient) -> None:
    await ollama.generate(ollama_target.model, "Say hi.", options={"num_predict": 2},
                          keep_alive="5m")
    loaded = {normalise_name(m.full_name) for m in await ollama.loaded_models()}
    assert normalise_name(ollama_target.model) in loaded
    await ollama.unload(ollama_target.model, deadline_s=60.0)
    loaded = {normalise_name(m.full_name) for m in await ollama.loaded_models()}
    assert normalise_name(ollama_target.model) not in loaded
    await ollama.unload(ollama_target.model, deadline_s=10.0)  # idempotent


async def test_capabilities_are_read_and_the_answer_lands_in_response(
    ollama_target: OllamaTarget, ollama: OllamaClient
) -> None:
    # /api/show lists capabilities from v0.6.4; storyloom sends think=false to thinking models.
    caps = await ollama.capabilities.of(ollama_target.model)
    assert caps is None or "completion" in caps
    result = await ollama.generate(ollama_target.model, "Say hello in three words.",
                                   options={"num_predict": 256})
    assert result.text.strip(), (caps, result.thinking[:200])
