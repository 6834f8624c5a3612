"""Native pass-through: a `/v1/messages` request served by an Anthropic pool goes to the provider as it was sent,
and its answer comes back unchanged, while the gateway still reads usage and its stages still apply."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM
from fixtures.providers.support import access_record, capture_access, fallback_crs, provider_crs
from tollway_dataplane.metrics import REGISTRY

MESSAGES = "/v1/messages"

EVERY_FIELD: dict[str, Any] = {
    "model": "mock-gpt",
    "max_tokens": 256,
    "system": [
        {"type": "text", "text": "You are a coding agent."},
        {"type": "text", "text": "Long shared instructions.", "cache_control": {"type": "ephemeral"}},
    ],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"}, {"type": "text", "text": "Hello"}],
        },
        {"role": "user", "content": "Go on"},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": "u-1"},
    "tools": [
        {
            "name": "Read",
            "description": "read",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "top_k": 5,
    "a_field_from_next_year": {"x": 1},
}


@pytest.fixture
async def native(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(provider_crs(mock_llm.url, "anthropic"))


async def test_every_field_and_beta_header_reach_the_provider(native: GatewayHandle, mock_llm: MockLLM) -> None:
    headers = {
        "anthropic-beta": "context-management-2025-06-27,interleaved-thinking-2025-05-14",
        "anthropic-version": "2023-06-01",
    }
    async with native.post(MESSAGES, EVERY_FIELD, headers=headers) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["type"] == "message"
    (request,) = await mock_llm.requests()
    # The provider got the caller's request byte for byte but the key, the model and nothing else.
    assert request["body"] == EVERY_FIELD | {"model": "mock-gpt"}
    assert request["headers"]["anthropic-beta"] == headers["anthropic-beta"]
    assert request["headers"]["x-api-key"] == "provider-secret"  # the pool's key, not the caller's


async def test_the_answer_comes_back_unchanged_and_usage_is_read(
    native: GatewayHandle, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    usage = {"prompt_tokens": 120, "completion_tokens": 7, "cached_tokens": 100, "cache_creation_tokens": 10}
    await mock_llm.script({"content": "cached hello", "usage": usage}, times=2)
    async with native.post(MESSAGES, EVERY_FIELD) as response:
        whole = await response.json()
    assert whole["usage"]["cache_read_input_tokens"] == 100
    assert whole["usage"]["cache_creation_input_tokens"] == 10
    record = (await access_record(caplog, MESSAGES))["ai_log"]
    assert record["cached_input_tokens"] == 100 and record["cache_creation_input_tokens"] == 10
    assert record["output_tokens"] == 7 and record["usage_estimated"] is False
    labels = {"route": "default/chat", "model": "mock-*", "consumer": "default/alice", "pool": "default/up"}
    assert (REGISTRY.get_sample_value("tollway_cached_input_tokens_total", labels) or 0) >= 100

    # Streamed: the provider's own events, in order, thinking and signatures included.
    async with native.post(MESSAGES, EVERY_FIELD | {"stream": True}) as response:
        assert response.status == 200
        raw = (await response.read()).decode()
    names = [line[len("event: ") :] for line in raw.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    record = (await access_record(caplog, MESSAGES))["ai_log"]
    assert record["stream"] is True and record["cached_input_tokens"] == 100 and record["output_tokens"] == 7


async def test_the_anthropic_sdk_round_trips_on_the_native_path(native: GatewayHandle, mock_llm: MockLLM) -> None:
    client = anthropic.AsyncAnthropic(base_url=native.url, api_key="sk-alice", max_retries=0)
    result = await client.messages.create(
        model="mock-gpt",
        max_tokens=64,
        system=[{"type": "text", "text": "Cached system.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello"}],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    assert result.content[0].type == "text"
    (request,) = await mock_llm.requests()
    assert request["body"]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert request["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert request["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"


async def test_chat_callers_on_an_anthropic_pool_are_still_translated(native: GatewayHandle, mock_llm: MockLLM) -> None:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}
    async with native.post("/v1/chat/completions", body) as response:
        assert (await response.json())["object"] == "chat.completion"
    (request,) = await mock_llm.requests()
    assert request["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


async def test_fallback_crosses_between_native_and_translated(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(fallback_crs(mock_llm.url))  # OpenAI-compatible primary, Anthropic fallback
    await mock_llm.script({"status": 503, "error": "busy"}, times=1)
    message = {
        "model": "smart",
        "max_tokens": 20,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    async with gateway.post(MESSAGES, message) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/claude"
        raw = (await response.read()).decode()
    assert "message_stop" in raw
    primary, fallback = await mock_llm.requests()
    assert "messages" in primary["body"] and primary["body"]["messages"][0] == {"role": "user", "content": "Hi"}
    assert fallback["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # native on the fallback
    assert fallback["body"]["model"] == "claude-backup"


async def test_a_provider_error_before_the_first_event_falls_back(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    files = fallback_crs(mock_llm.url)
    # Anthropic first, the OpenAI-compatible pool as its fallback: the error event of the native stream fails over.
    files["route.yaml"] = files["route.yaml"].replace(
        "backends: [{pool: primary, model: primary-model}]\n                  fallbacks: [{pool: claude, model: claude-backup}]",
        "backends: [{pool: claude, model: claude-backup}]\n                  fallbacks: [{pool: primary, model: primary-model}]",
    )
    gateway = await make_gateway(files)
    await mock_llm.script({"status": 529, "error": "overloaded"}, times=1)
    message = {"model": "smart", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    async with gateway.post(MESSAGES, message) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/primary"
        raw = (await response.read()).decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"  # converted for the caller


async def test_native_answers_are_cached(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    files = provider_crs(mock_llm.url, "anthropic")
    files["route.yaml"] = files["route.yaml"].rstrip() + "\n              cache: {ttl: 10m}\n"
    gateway = await make_gateway(files)
    message = {"model": "mock-gpt", "max_tokens": 30, "messages": [{"role": "user", "content": "Cache me"}]}
    for stream in (False, True):
        body = message | {"stream": stream}
        async with gateway.post(MESSAGES, body) as response:
            assert response.headers["x-tollway-cache"] == "miss"
            first = await response.read()
        async with gateway.post(MESSAGES, body) as response:
            assert response.headers["x-tollway-cache"] == "hit"
            assert await response.read() == first
    assert len(await mock_llm.requests()) == 2


async def test_what_only_a_native_pool_takes_is_refused_by_name_on_a_translated_one(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "openai-compatible"))
    async with gateway.post(MESSAGES, EVERY_FIELD) as response:
        assert response.status == 400
        body = await response.json()
    assert body["type"] == "error" and "tools[1]" in body["error"]["message"]
    assert "web_search_20250305" in body["error"]["message"]
    assert await mock_llm.requests() == []  # refused before any provider was called
