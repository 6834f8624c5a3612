"""The Anthropic translator: OpenAI chat in, Messages API out and back, whole and streamed, then end to end."""

from __future__ import annotations

import copy
import json
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from conftest import GatewayFactory, MockLLM, read_sse
from fixtures.providers.support import (
    access_record,
    attempt_outcomes,
    capture_access,
    fallback_crs,
    feed_all,
    fixture_bytes,
    fixture_json,
    make_call,
    make_pool,
    provider_crs,
    sse_payloads,
)
from tollway_dataplane.errors import GatewayError
from tollway_dataplane.providers import translator_for
from tollway_dataplane.providers.anthropic import AnthropicTranslator
from tollway_dataplane.providers.anthropic_request import messages_request

CHAT = "/v1/chat/completions"
TRANSLATOR = AnthropicTranslator()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "messages": [{"role": "user", "content": "Hello"}], **extra}


# -- request ---------------------------------------------------------------------------------------------------


def test_full_request_matches_the_documented_messages_shape() -> None:
    body = fixture_json("openai/chat_request_full.json")
    expected = fixture_json("anthropic/request_full.json")
    assert messages_request(body, "claude-sonnet-4-5", stream=False) == expected


def test_build_request_url_headers_and_model_rewrite() -> None:
    pool = make_pool("anthropic", "https://api.anthropic.com", headers=(("anthropic-beta", "prompt-caching"),))
    upstream = TRANSLATOR.build_request(make_call(chat(stream=True)), pool, pool.keys[0], "claude-sonnet-4-5")
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers["x-api-key"] == "provider-secret"
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["anthropic-beta"] == "prompt-caching"
    assert "Authorization" not in upstream.headers
    body = json.loads(upstream.body)
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,  # Anthropic requires it; OpenAI callers often leave it out
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "stream": True,
    }
    # A base URL that already names /v1 is not doubled.
    pool = make_pool("anthropic", "https://proxy.example/anthropic/v1")
    assert (
        TRANSLATOR.build_request(make_call(chat()), pool, None, "m").url
        == "https://proxy.example/anthropic/v1/messages"
    )


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: Any) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = chat(tools=tools, tool_choice=choice, parallel_tool_calls=parallel)
    out = messages_request(body, "m", stream=False)
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    assert out.get("tool_choice") == expected


def test_max_tokens_and_stop_list() -> None:
    out = messages_request(chat(max_tokens=77, stop=["a", "b"]), "m", stream=False)
    assert out["max_tokens"] == 77 and out["stop_sequences"] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat(n=2), "'n'"),
        (chat(messages=[{"role": "function", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]), "content[0].type"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (
            chat(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}],
                    }
                ]
            ),
            "arguments",
        ),
        (chat(tools=[{"type": "web_search"}]), "tools[0]"),
        (chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="sometimes"), "tool_choice"),
    ],
)
def test_untranslatable_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as info:
        messages_request(body, "m", stream=False)
    assert info.value.status == 400 and field in info.value.message


def test_embeddings_are_refused_with_a_clear_400() -> None:
    pool = make_pool("anthropic", "https://api.anthropic.com")
    call = make_call({"model": "claude-x", "input": "hi"}, endpoint="embeddings")
    with pytest.raises(GatewayError) as info:
        TRANSLATOR.build_request(call, pool, None, "claude-x")
    assert info.value.status == 400 and "embeddings" in info.value.message


# -- whole responses -------------------------------------------------------------------------------------------


def test_text_response() -> None:
    out, usage = TRANSLATOR.translate_response(make_call(chat()), fixture_bytes("anthropic/response_text.json"))
    body = json.loads(out)
    assert body["object"] == "chat.completion" and body["id"] == "msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert body["model"] == "claude-sonnet-4-5-20250929"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hi! My name is Claude."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] == 2095 and body["usage"]["completion_tokens"] == 503
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.estimated) == (2095, 503, False)


def test_tool_use_response_with_cache_tokens() -> None:
    raw = fixture_bytes("anthropic/response_tool_use_cached.json")
    out, usage = TRANSLATOR.translate_response(make_call(chat()), raw)
    body = json.loads(out)
    message = body["choices"][0]["message"]
    assert message["content"] == "I'll check the current weather in San Francisco for you."  # thinking left out
    assert message["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'},
        }
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    # prompt_tokens counts every input token: uncached + cache reads + cache writes.
    assert body["usage"] == {
        "prompt_tokens": 21 + 1800 + 188,
        "completion_tokens": 65,
        "total_tokens": 21 + 1800 + 188 + 65,
        "prompt_tokens_details": {"cached_tokens": 1800},
    }
    assert usage is not None and (usage.input_tokens, usage.cached_input_tokens) == (2009, 1800)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    data = fixture_json("anthropic/response_text.json") | {"stop_reason": stop_reason}
    out, _ = TRANSLATOR.translate_response(make_call(chat()), orjson.dumps(data))
    assert json.loads(out)["choices"][0]["finish_reason"] == finish


def test_errors_keep_the_provider_message_and_type() -> None:
    error = TRANSLATOR.translate_error(404, fixture_bytes("anthropic/error_not_found.json"))
    assert (error.status, error.message, error.type) == (404, "model: claude-nonexistent", "not_found_error")
    plain = TRANSLATOR.translate_error(502, b"<html>Bad gateway</html>")
    assert plain.status == 502 and "Bad gateway" in plain.message


# -- streams ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [None, 1, 7])
def test_text_stream_with_exact_cached_usage(step: int | None) -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True), wants_usage=True))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("anthropic/stream_text_cached.sse"), step))
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello!"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert all(c["id"] == "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY" for c in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 25 + 310 + 2048,
        "completion_tokens": 15,
        "total_tokens": 25 + 310 + 2048 + 15,
        "prompt_tokens_details": {"cached_tokens": 2048},
    }
    usage = stream.state.usage
    assert usage is not None and not usage.estimated
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (2383, 15, 2048)


def test_usage_chunk_only_when_the_caller_asked() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("anthropic/stream_text_cached.sse")))
    assert payloads[-1] == "[DONE]"
    assert all("usage" not in p for p in payloads[:-1])
    assert stream.state.usage is not None and stream.state.usage.output_tokens == 15  # accounted all the same


def test_message_delta_cumulative_input_counts_win() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    raw = fixture_bytes("anthropic/stream_text_cached.sse").replace(
        b'"usage": {"output_tokens": 15}',
        b'"usage": {"input_tokens": 30, "cache_read_input_tokens": 2048, "output_tokens": 15}',
    )
    feed_all(stream, raw)
    usage = stream.state.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (30 + 2048 + 310, 15)


def test_tool_use_stream() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("anthropic/stream_tool_use.sse"), 5))
    chunks = [p for p in payloads if p != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Okay, let's check."
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            entry["id"] += call.get("id", "")
            entry["name"] += call.get("function", {}).get("name", "")
            entry["arguments"] += call.get("function", {}).get("arguments", "")
    assert calls[0]["id"] == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert calls[1]["name"] == "get_time" and json.loads(calls[1]["arguments"]) == {"timezone": "America/Los_Angeles"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.state.usage is not None and stream.state.usage.output_tokens == 89


def test_error_event_mid_stream_becomes_an_openai_error_event() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("anthropic/stream_error.sse")))
    assert payloads[-1] == {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}}
    assert "[DONE]" not in payloads
    assert stream.state.usage is not None and stream.state.usage.input_tokens == 12


def test_cut_stream_ends_with_an_error_event() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    raw = fixture_bytes("anthropic/stream_text_cached.sse")
    payloads = sse_payloads(feed_all(stream, raw[: raw.index(b"event: message_delta")]))
    assert payloads[-1]["error"]["code"] == "upstream_stream_incomplete"
    usage = stream.state.usage
    assert usage is not None and usage.estimated and usage.input_tokens == 2383


def test_registered() -> None:
    assert isinstance(translator_for("anthropic"), AnthropicTranslator)


# -- through the gateway and the mock --------------------------------------------------------------------------


async def test_round_trip(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    await mock_llm.script({"content": "one two three", "usage": {"prompt_tokens": 7, "cached_tokens": 100}})
    async with gateway.post(CHAT, chat(model="renamed", max_tokens=50, stop="zzz")) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["choices"][0]["message"]["content"] == "one two three"
    assert body["usage"]["prompt_tokens"] == 107 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    seen = (await mock_llm.requests())[-1]
    assert seen["path"] == "/v1/messages" and seen["headers"]["x-api-key"] == "provider-secret"
    assert seen["body"]["model"] == "upstream-deployment" and seen["body"]["max_tokens"] == 50
    assert seen["body"]["stop_sequences"] == ["zzz"]


async def test_stream_round_trip_with_usage(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    await mock_llm.script({"usage": {"prompt_tokens": 3, "cached_tokens": 40, "cache_creation_tokens": 2}})
    body = chat(stream=True, stream_options={"include_usage": True})
    async with gateway.post(CHAT, body) as response:
        assert response.status == 200
        payloads = await read_sse(response)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).startswith("Hello")
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == 3 + 40 + 2 and usage["prompt_tokens_details"]["cached_tokens"] == 40


async def test_scripted_error_is_passed_on(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    await mock_llm.script({"status": 400, "error": "messages: roles must alternate"})
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["message"] == "messages: roles must alternate" and error["type"] == "invalid_request_error"


async def test_fallback_from_openai_compatible_to_anthropic(
    make_gateway: GatewayFactory, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(fallback_crs(mock_llm.url))
    await mock_llm.script({"status": 500}, times=0, path="/chat/completions")
    await mock_llm.script(
        {"usage": {"prompt_tokens": 11, "completion_tokens": 6, "cached_tokens": 5}}, path="/messages"
    )
    async with gateway.post(CHAT, chat(model="smart")) as response:
        assert response.status == 200
        assert response.headers["x-tollway-pool"] == "default/claude"
        assert response.headers["x-tollway-model"] == "claude-backup"
        assert response.headers["x-tollway-attempts"] == "2"
        body = await response.json()
    assert body["usage"]["prompt_tokens"] == 16
    record = (await access_record(caplog, CHAT))["ai_log"]
    assert record["pool"] == "default/claude"
    assert attempt_outcomes(record) == ["500", "ok"]
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (16, 6, False)
    assert record.get("cached_input_tokens", 5) == 5


async def test_stream_fallback_from_openai_compatible_to_anthropic(
    make_gateway: GatewayFactory, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(fallback_crs(mock_llm.url))
    await mock_llm.script({"status": 500}, times=0, path="/chat/completions")
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "cached_tokens": 30, "cache_creation_tokens": 3}
    await mock_llm.script({"content": "a b c d", "usage": usage}, path="/messages")
    async with gateway.post(CHAT, chat(model="smart", stream=True)) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/claude"
        payloads = await read_sse(response)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)  # the caller did not ask for it
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "a b c d"
    record = (await access_record(caplog, CHAT))["ai_log"]
    assert record["pool"] == "default/claude" and attempt_outcomes(record) == ["500", "ok"]
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (9 + 30 + 3, 4, False)
    assert record.get("cached_input_tokens", 30) == 30


# -- the OpenAI SDK against an Anthropic-backed route ----------------------------------------------------------


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


async def test_openai_sdk_tool_call_and_answer(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}})
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = await client.chat.completions.create(model="claude-x", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21C"},
    ]
    second = await client.chat.completions.create(model="claude-x", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content
    sent = (await mock_llm.requests())[-1]["body"]
    assert sent["tools"][0]["input_schema"]["required"] == ["city"]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "21C"}


async def test_openai_sdk_stream_with_tool_call(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script({"content": "Checking.", "tool_call": {"name": "get_weather", "arguments": {"city": "Oslo"}}})
    stream = await client.chat.completions.create(
        model="claude-x",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, arguments, finish, usage = "", "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert text == "Checking." and json.loads(arguments) == {"city": "Oslo"} and finish == "tool_calls"
    assert usage is not None and usage.completion_tokens > 0


async def test_openai_sdk_plain_stream(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "anthropic"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    stream = await client.chat.completions.create(
        model="claude-x", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from the Tollway mock model."


def test_fixture_is_not_mutated_by_translation() -> None:
    body = fixture_json("openai/chat_request_full.json")
    before = copy.deepcopy(body)
    messages_request(body, "m", stream=True)
    assert body == before


# -- the mock speaks Anthropic (checked with the official SDK, straight at the mock) ---------------------------


async def test_mock_messages_with_the_anthropic_sdk(mock_llm: MockLLM) -> None:
    client = anthropic.AsyncAnthropic(base_url=mock_llm.url, api_key="k", max_retries=0)
    await mock_llm.script({"usage": {"cached_tokens": 9, "cache_creation_tokens": 1}})
    result = await client.messages.create(model="claude-x", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    assert result.content[0].text == "Hello from the"  # type: ignore[union-attr]
    assert result.stop_reason == "max_tokens"
    assert (result.usage.cache_read_input_tokens, result.usage.cache_creation_input_tokens) == (9, 1)
    await mock_llm.script({"content": "Sure.", "tool_call": {"name": "f", "arguments": '{"x": [1, 2]}'}})
    async with client.messages.stream(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        final = await stream.get_final_message()
    assert [b.type for b in final.content] == ["text", "tool_use"] and final.stop_reason == "tool_use"
    assert final.content[1].input == {"x": [1, 2]}  # type: ignore[union-attr]
    assert final.usage.output_tokens == len(final.content[0].text.split()) + 3  # type: ignore[union-attr]


async def test_mock_errors_in_anthropic_shape(mock_llm: MockLLM) -> None:
    client = anthropic.AsyncAnthropic(base_url=mock_llm.url, api_key="k", max_retries=0)
    await mock_llm.script({"status": 529, "retry_after": 3})
    with pytest.raises(anthropic.APIStatusError) as info:
        await client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 529 and info.value.response.headers["Retry-After"] == "3"
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    no_limit = {"model": "claude-x", "messages": [{"role": "user", "content": "Hi"}]}
    async with mock_llm.session.post(f"{mock_llm.url}/v1/messages", json=no_limit) as response:
        assert response.status == 400
        assert await response.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
        }


async def test_mock_stream_reset_and_echo(mock_llm: MockLLM) -> None:
    body = {"model": "claude-x", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    await mock_llm.script({"reset_after_chunks": 2, "chunks": 10})
    with pytest.raises(aiohttp.ClientPayloadError):
        async with mock_llm.session.post(f"{mock_llm.url}/v1/messages", json=body) as response:
            await response.read()
    await mock_llm.script({"echo": True})
    async with mock_llm.session.post(f"{mock_llm.url}/v1/messages", json={**body, "stream": False}) as response:
        echoed = json.loads((await response.json())["content"][0]["text"])
    assert echoed["path"] == "/v1/messages" and echoed["body"]["max_tokens"] == 50
