"""The Gemini translator: OpenAI chat in, generateContent out and back, whole and streamed, then end to end."""

from __future__ import annotations

import json
from typing import Any

import openai
import orjson
import pytest
from conftest import GatewayFactory, MockLLM, read_sse
from fixtures.providers.support import (
    access_record,
    capture_access,
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
from tollway_dataplane.providers.gemini import GeminiTranslator
from tollway_dataplane.providers.gemini_request import generate_request

CHAT = "/v1/chat/completions"
TRANSLATOR = GeminiTranslator()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "Hello"}], **extra}


def translate(name: str) -> dict[str, Any]:
    out, _ = TRANSLATOR.translate_response(make_call(chat()), fixture_bytes(name))
    return json.loads(out)  # type: ignore[no-any-return]


# -- request ---------------------------------------------------------------------------------------------------


def test_full_request_matches_the_documented_shape() -> None:
    assert generate_request(fixture_json("openai/chat_request_full.json")) == fixture_json("gemini/request_full.json")


def test_build_request_urls_and_key_header() -> None:
    pool = make_pool("gemini", "https://generativelanguage.googleapis.com")
    upstream = TRANSLATOR.build_request(make_call(chat()), pool, pool.keys[0], "gemini-2.5-flash")
    assert upstream.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert upstream.headers["x-goog-api-key"] == "provider-secret" and "Authorization" not in upstream.headers
    assert json.loads(upstream.body) == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    stream = TRANSLATOR.build_request(make_call(chat(stream=True)), pool, pool.keys[0], "models/gemini-2.5-pro")
    assert stream.url.endswith("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    pinned = make_pool("gemini", "https://proxy.example/v1")  # a base naming its version is kept
    assert TRANSLATOR.build_request(make_call(chat()), pinned, None, "g").url == (
        "https://proxy.example/v1/models/g:generateContent"
    )


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = generate_request(chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice=choice))
    assert out["tools"] == [{"functionDeclarations": [{"name": "f"}]}]
    assert out["toolConfig"] == {"functionCallingConfig": expected}


def test_generation_config_and_json_output() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = chat(
        max_tokens=20,
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    )
    assert generate_request(body)["generationConfig"] == {
        "maxOutputTokens": 20,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": 0.25,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


@pytest.mark.parametrize(("effort", "budget"), [("none", 0), ("low", 1024), ("medium", 8192), ("high", 24576)])
def test_reasoning_effort_is_a_thinking_budget(effort: str, budget: int) -> None:
    config = generate_request(chat(reasoning_effort=effort))["generationConfig"]
    assert config == {"thinkingConfig": {"thinkingBudget": budget}}


def test_thought_signature_goes_back_with_the_call() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": {"google": {"thought_signature": "sig=="}},
    }
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "[1, 2]"},
    ]
    contents = generate_request(chat(messages=messages))["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "sig=="}],
    }
    assert contents[2]["parts"] == [{"functionResponse": {"name": "f", "response": {"output": [1, 2]}}}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat(n=3), "'n'"),
        (chat(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}]), "messages[0].tool_call_id"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]), "url"),
        (chat(messages=[{"role": "critic", "content": "x"}]), "messages[0].role"),
        (chat(tools=[{"type": "code_interpreter"}]), "tools[0]"),
    ],
)
def test_untranslatable_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as info:
        generate_request(body)
    assert info.value.status == 400 and field in info.value.message


def test_embeddings_are_refused_with_a_clear_400() -> None:
    pool = make_pool("gemini", "https://generativelanguage.googleapis.com")
    call = make_call({"model": "text-embedding-004", "input": "hi"}, endpoint="embeddings")
    with pytest.raises(GatewayError) as info:
        TRANSLATOR.build_request(call, pool, None, "text-embedding-004")
    assert info.value.status == 400 and "embeddings" in info.value.message


# -- whole responses -------------------------------------------------------------------------------------------


def test_text_response() -> None:
    body = translate("gemini/response_text.json")
    assert body["id"] == "mLhxaK7ZMLq4nvgPgfyB2Qg" and body["model"] == "gemini-2.0-flash"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "AI learns patterns from data to make predictions.",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 10,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_function_calls_thoughts_and_cached_usage() -> None:
    out, usage = TRANSLATOR.translate_response(make_call(chat()), fixture_bytes("gemini/response_function_call.json"))
    body = json.loads(out)
    message = body["choices"][0]["message"]
    assert message["content"] is None  # the thought summary is not part of the answer
    calls = message["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["set_light_values", "set_light_values"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"brightness": 25, "color_temp": "warm"}
    assert calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "CiwBVKhc7nN1bFdmBkzD0wJ"}}
    assert "extra_content" not in calls[1]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    # Thinking is billed as output; cached tokens are part of the prompt count.
    assert body["usage"]["completion_tokens"] == 40 + 118
    assert body["usage"]["prompt_tokens"] == 1075 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 1024
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (
        1075,
        158,
        1024,
    )


def test_blocked_prompt_is_a_content_filter_completion() -> None:
    body = translate("gemini/response_prompt_blocked.json")
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] is None
    assert body["usage"]["prompt_tokens"] == 9 and body["usage"]["completion_tokens"] == 0


def test_safety_stop_is_content_filter() -> None:
    body = translate("gemini/response_safety.json")
    assert body["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    data = fixture_json("gemini/response_text.json")
    data["candidates"][0]["finishReason"] = reason
    out, _ = TRANSLATOR.translate_response(make_call(chat()), orjson.dumps(data))
    assert json.loads(out)["choices"][0]["finish_reason"] == finish


def test_errors_keep_the_provider_message() -> None:
    error = TRANSLATOR.translate_error(400, fixture_bytes("gemini/error_invalid_key.json"))
    assert error.message == "API key not valid. Please pass a valid API key."
    assert (error.status, error.type, error.code) == (400, "invalid_request_error", "INVALID_ARGUMENT")
    wrapped = TRANSLATOR.translate_error(
        429, b'[{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}]'
    )
    assert (wrapped.message, wrapped.type) == ("Quota", "rate_limit_error")


# -- streams ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [None, 1, 11])
def test_text_stream_usage_from_the_last_metadata(step: int | None) -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True), wants_usage=True))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("gemini/stream_text.sse"), step))
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "The quick brown fox jumps over the lazy dog."
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 12 + 32,
        "total_tokens": 52,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 32},  # thinking, counted in the completion too
    }
    usage = stream.state.usage
    assert usage is not None and not usage.estimated and (usage.input_tokens, usage.output_tokens) == (8, 44)


def test_function_call_stream() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    payloads = sse_payloads(feed_all(stream, fixture_bytes("gemini/stream_function_call.sse")))
    chunks = [p for p in payloads if p != "[DONE]"]
    assert all("usage" not in c for c in chunks)
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"location": "Boston, MA"}
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "Cs0BAVSoXO4"}}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_blocked_prompt_stream() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    raw = b"data: " + fixture_bytes("gemini/response_prompt_blocked.json").replace(b"\n", b"") + b"\r\n\r\n"
    payloads = sse_payloads(feed_all(stream, raw))
    assert payloads[-2]["choices"][0]["finish_reason"] == "content_filter" and payloads[-1] == "[DONE]"


def test_cut_stream_and_error_event() -> None:
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    raw = fixture_bytes("gemini/stream_text.sse")
    payloads = sse_payloads(feed_all(stream, raw[: raw.rindex(b"data:")]))
    assert payloads[-1]["error"]["code"] == "upstream_stream_incomplete"
    stream = TRANSLATOR.stream(make_call(chat(stream=True)))
    error = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    payloads = sse_payloads(feed_all(stream, raw[: raw.index(b"\r\n\r\n") + 4] + error))
    assert payloads[-1]["error"]["message"] == "The model is overloaded." and "[DONE]" not in payloads


def test_registered() -> None:
    assert isinstance(translator_for("gemini"), GeminiTranslator)


# -- through the gateway and the mock --------------------------------------------------------------------------


async def test_round_trip(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    await mock_llm.script({"content": "a b c", "usage": {"prompt_tokens": 30, "cached_tokens": 20}})
    async with gateway.post(CHAT, chat(model="renamed", max_tokens=10, temperature=0.1)) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert body["choices"][0]["message"]["content"] == "a b c"
    assert body["usage"]["prompt_tokens"] == 30 and body["usage"]["prompt_tokens_details"]["cached_tokens"] == 20
    seen = (await mock_llm.requests())[-1]
    assert seen["path"] == "/v1beta/models/upstream-deployment:generateContent"
    assert seen["headers"]["x-goog-api-key"] == "provider-secret"
    assert seen["body"]["generationConfig"] == {"maxOutputTokens": 10, "temperature": 0.1}


async def test_stream_round_trip(
    make_gateway: GatewayFactory, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    await mock_llm.script({"usage": {"prompt_tokens": 17, "completion_tokens": 6}})
    async with gateway.post(CHAT, chat(stream=True)) as response:
        assert response.status == 200
        payloads = await read_sse(response)
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Hello from the Tollway mock model."
    )
    assert (await mock_llm.requests())[-1]["query"] == {"alt": "sse"}
    record = (await access_record(caplog, CHAT))["ai_log"]
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (17, 6, False)


@pytest.mark.parametrize("stream", [False, True])
async def test_safety_block_and_blocked_prompt(make_gateway: GatewayFactory, mock_llm: MockLLM, stream: bool) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    for behaviour in ({"finish_reason": "SAFETY"}, {"block_reason": "PROHIBITED_CONTENT"}):
        await mock_llm.script(behaviour)
        async with gateway.post(CHAT, chat(stream=stream)) as response:
            assert response.status == 200
            if stream:
                payloads = await read_sse(response)
                finish = [json.loads(p)["choices"][0]["finish_reason"] for p in payloads[:-1]][-1]
            else:
                finish = (await response.json())["choices"][0]["finish_reason"]
        assert finish == "content_filter", behaviour


async def test_gemini_error_shape_is_passed_on(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    await mock_llm.script({"status": 404, "error": "models/nope is not found for API version v1beta"})
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 404
        error = (await response.json())["error"]
    assert error["message"] == "models/nope is not found for API version v1beta" and error["code"] == "NOT_FOUND"


# -- the OpenAI SDK against a Gemini-backed route --------------------------------------------------------------


TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


async def test_openai_sdk_tool_call_and_answer(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Quito"}}})
    messages: list[Any] = [{"role": "user", "content": "Weather in Quito?"}]
    first = await client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Quito"}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 14}'},
    ]
    second = await client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content and second.choices[0].finish_reason == "stop"
    sent = (await mock_llm.requests())[-1]["body"]
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Quito"}}}],
    }
    assert sent["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"celsius": 14}}}],
    }
    assert sent["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"] == ["city"]


async def test_openai_sdk_stream_with_tool_call(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script(
        {"content": "Looking it up.", "tool_call": {"name": "get_weather", "arguments": {"city": "Rio"}}}
    )
    stream = await client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": "Weather in Rio?"}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, arguments, finish, usage = "", "", None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert text == "Looking it up." and json.loads(arguments) == {"city": "Rio"} and finish == "tool_calls"
    assert usage is not None and usage.prompt_tokens > 0


async def test_openai_sdk_plain(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "gemini"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    result = await client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
    )
    assert result.choices[0].message.content == "Hello from the Tollway mock model."
    assert (await mock_llm.requests())[-1]["body"]["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    with pytest.raises(openai.BadRequestError) as info:
        await client.embeddings.create(model="gemini-2.5-flash", input="x")
    assert "embeddings" in str(info.value)


# -- the mock speaks Gemini ------------------------------------------------------------------------------------


async def test_mock_gemini_errors_and_stream_rules(mock_llm: MockLLM) -> None:
    url = f"{mock_llm.url}/v1beta/models/gemini-x"
    body = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    await mock_llm.script({"status": 429, "retry_after": 2, "error": "Resource has been exhausted"})
    async with mock_llm.session.post(f"{url}:generateContent", json=body) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "2"
        assert await response.json() == {
            "error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}
        }
    async with mock_llm.session.post(f"{url}:generateContent", json={"contents": []}) as response:
        assert response.status == 400 and (await response.json())["error"]["status"] == "INVALID_ARGUMENT"
    async with mock_llm.session.post(f"{url}:streamGenerateContent", json=body) as response:
        assert response.status == 400  # the mock streams the alt=sse way only
    await mock_llm.script({"chunks": 3, "usage": {"cached_tokens": 1}})
    async with mock_llm.session.post(f"{url}:streamGenerateContent?alt=sse", json=body) as response:
        events = [json.loads(p) for p in await read_sse(response)]
    assert [e["candidates"][0].get("finishReason") for e in events] == [None, None, None, "STOP"]
    assert events[-1]["usageMetadata"] == {
        "promptTokenCount": 1,
        "candidatesTokenCount": 3,
        "cachedContentTokenCount": 1,
        "totalTokenCount": 4,
    }
    assert (await mock_llm.requests())[-1]["path"].endswith("gemini-x:streamGenerateContent")
