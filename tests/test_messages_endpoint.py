"""The Anthropic-compatible `/v1/messages` entry: request conversion, answers and errors in Anthropic shape,
and the official anthropic SDK against OpenAI-, Anthropic- and Gemini-backed routes."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import orjson
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM
from fixtures.providers.support import access_record, capture_access, fixture_json, provider_crs
from tollway_dataplane.caller.anthropic import ANTHROPIC, to_openai_request
from tollway_dataplane.errors import GatewayError
from tollway_dataplane.providers.anthropic_request import messages_request

MESSAGES = "/v1/messages"
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def message(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}], **extra}


def events(data: bytes | list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, payload) pairs of an Anthropic SSE stream; the name line and the payload type must agree."""
    raw = b"".join(data) if isinstance(data, list) else data
    out = []
    for block in raw.split(b"\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        payload = json.loads(lines[b"data"])
        assert payload["type"] == lines[b"event"].decode()
        out.append((payload["type"], payload))
    return out


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-x"}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


# -- request conversion ----------------------------------------------------------------------------------------


def test_full_request_converts_to_openai() -> None:
    out = to_openai_request(fixture_json("anthropic/request_full.json"))
    expected = fixture_json("openai/chat_request_full.json")
    system = "You are a weather assistant.\n\nAnswer in one sentence."
    assert out["messages"][0] == {"role": "system", "content": system}
    # The rest is the OpenAI request the same conversation makes (tool results become tool messages).
    assert out["messages"][1]["content"][:2] == expected["messages"][2]["content"][:2]
    assert out["messages"][1]["content"][2] == {
        "type": "image_url",
        "image_url": {"url": expected["messages"][2]["content"][2]["image_url"]["url"]},
    }
    assert out["messages"][2]["role"] == "assistant" and out["messages"][2]["content"] == "Let me check both cities."
    assert [json.loads(c["function"]["arguments"]) for c in out["messages"][2]["tool_calls"]] == [
        {"location": "Paris, France"},
        {"location": "Rome, Italy", "unit": "celsius"},
    ]
    assert out["messages"][3:] == [
        {"role": "tool", "tool_call_id": "call_paris", "content": '{"temperature": 14, "sky": "cloudy"}'},
        {"role": "tool", "tool_call_id": "call_rome", "content": "22 degrees and sunny"},
        {"role": "user", "content": "Thanks. Which one is warmer?"},
    ]
    assert out["tools"] == expected["tools"]
    assert out["tool_choice"] == "required" and out["parallel_tool_calls"] is False
    assert (out["max_tokens"], out["temperature"], out["top_p"], out["stop"]) == (512, 0.2, 0.9, ["END"])
    assert out["user"] == "user-1234" and "stream" not in out


def test_round_trip_through_both_directions_keeps_the_request() -> None:
    original = fixture_json("anthropic/request_full.json")
    back = messages_request(to_openai_request(original), original["model"], stream=False)
    assert back["system"] == "You are a weather assistant.\n\nAnswer in one sentence."  # blocks joined
    assert {k: v for k, v in back.items() if k != "system"} == {k: v for k, v in original.items() if k != "system"}


def test_stream_asks_for_usage() -> None:
    out = to_openai_request(message(stream=True, system="Be brief."))
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}


def test_tool_result_images_and_documents() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "UERG"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "chart:"}, image]}
    body = message(
        messages=[
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "plot", "input": {}}]},
            {"role": "user", "content": [result, pdf]},
        ]
    )
    out = to_openai_request(body)
    assert out["messages"][1] == {"role": "tool", "tool_call_id": "t1", "content": "chart:"}
    # OpenAI tool messages hold text only: the result's image follows in the user turn, before the user's own parts.
    assert out["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,UERG"}},
        ],
    }


def test_thinking_blocks_are_dropped() -> None:
    assistant = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Hi"}],
    }
    out = to_openai_request(message(messages=[{"role": "user", "content": "x"}, assistant]))
    assert out["messages"][1] == {"role": "assistant", "content": "Hi"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "max_tokens": 5}, "'messages'"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "'max_tokens'"),
        (message(max_tokens="many"), "'max_tokens'"),
        (message(messages=[{"role": "tool", "content": "x"}]), "messages[0].role"),
        (message(messages=[{"role": "user", "content": "x"}, {"role": "system", "content": 5}]), "messages[1].content"),
        (message(messages=[{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0].type"),
        (message(stop_sequences="END"), "'stop_sequences'"),
        (message(tools=[{"type": "web_search_20250305", "name": "web_search"}]), "tools[0]"),
        (message(tools=TOOLS, tool_choice={"type": "maybe"}), "tool_choice"),
        (message(system=[{"type": "image"}]), "system[0]"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as info:
        to_openai_request(body)
    assert info.value.status == 400 and field in info.value.message


# -- answers ---------------------------------------------------------------------------------------------------


def test_whole_answer_with_tool_call_and_cached_usage() -> None:
    completion = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 100}},
    }
    out = json.loads(ANTHROPIC.body(orjson.dumps(completion)))
    assert out == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "gpt-x",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "output_tokens": 9,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
        },
    }


def test_stream_events_text_then_tool_use_with_usage_at_the_end() -> None:
    stream = ANTHROPIC.stream("served-model")
    upstream = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_7", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(
            None, usage={"prompt_tokens": 50, "completion_tokens": 12, "prompt_tokens_details": {"cached_tokens": 8}}
        ),
        b"data: [DONE]\n\n",
    ]
    out = []
    for event in upstream:  # one upstream event at a time, as the relay feeds them
        out += stream.feed([event])
    out += stream.finish()
    seen = events(out)
    assert [name for name, _ in seen] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seen[0][1]["message"]
    assert start["id"] == "msg_chatcmpl-1" and start["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert seen[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert seen[5][1]["content_block"] == {"type": "tool_use", "id": "call_7", "name": "f", "input": {}}
    assert "".join(p["delta"]["partial_json"] for n, p in seen if p.get("index") == 1 and n == "content_block_delta")
    assert seen[9][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 42,
            "output_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 8,
        },
    }


def test_stream_error_and_cut_streams() -> None:
    stream = ANTHROPIC.stream("m")
    error = b'data: {"error": {"message": "boom", "type": "rate_limit_error", "code": null}}\n\n'
    seen = events(stream.feed([chunk({"content": "a"}), error]) + stream.finish())
    assert seen[-1] == ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "boom"}})
    stream = ANTHROPIC.stream("m")
    seen = events(stream.feed([chunk({"content": "a"})]) + stream.finish())
    assert seen[-1][0] == "error" and "before the answer was complete" in seen[-1][1]["error"]["message"]
    stream = ANTHROPIC.stream("m")  # a finish reason without [DONE] is a whole answer
    seen = events(stream.feed([chunk({"content": "a"}), chunk({}, "length")]) + stream.finish())
    assert seen[-2][1]["delta"]["stop_reason"] == "max_tokens" and seen[-1][0] == "message_stop"


@pytest.mark.parametrize(
    ("status", "type", "expected"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (403, "permission_error", "permission_error"),
        (404, "not_found_error", "not_found_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "internal_error", "api_error"),
        (502, "upstream_error", "api_error"),
        (503, "service_unavailable", "overloaded_error"),
        (504, "upstream_timeout", "timeout_error"),
        (413, "invalid_request_error", "invalid_request_error"),
    ],
)
def test_error_body_types(status: int, type: str, expected: str) -> None:
    body = json.loads(ANTHROPIC.error_body(status, "nope", type, None))
    assert body == {"type": "error", "error": {"type": expected, "message": "nope"}}


def test_stream_error_event_shape() -> None:
    assert events(ANTHROPIC.stream_error_event("cut", "upstream_stream_interrupted")) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "cut"}})
    ]


# -- over HTTP: errors in Anthropic shape ----------------------------------------------------------------------


@pytest.fixture
async def openai_backed(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(provider_crs(mock_llm.url, "openai-compatible"))


async def test_missing_key_is_an_anthropic_401(openai_backed: GatewayHandle) -> None:
    async with openai_backed.post(MESSAGES, message(), key=None) as response:
        assert response.status == 401
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


async def test_bad_body_is_an_anthropic_400(openai_backed: GatewayHandle) -> None:
    async with openai_backed.post(MESSAGES, {"model": "mock-gpt", "messages": []}) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"]["type"] == "invalid_request_error" and "'messages'" in body["error"]["message"]
    async with openai_backed.post(MESSAGES, b"{not json", headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400 and (await response.json())["type"] == "error"


async def test_unknown_model_is_an_anthropic_404(openai_backed: GatewayHandle) -> None:
    async with openai_backed.post(MESSAGES, message(model="no-such-model")) as response:
        assert response.status == 404
        body = await response.json()
    assert body == {"type": "error", "error": {"type": "not_found_error", "message": body["error"]["message"]}}
    assert "no-such-model" in body["error"]["message"]


async def test_get_is_an_anthropic_405(openai_backed: GatewayHandle) -> None:
    async with openai_backed.get(MESSAGES) as response:
        assert response.status == 405 and (await response.json())["error"]["type"] == "invalid_request_error"


async def test_upstream_4xx_is_passed_on_in_anthropic_shape(openai_backed: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"status": 400, "error": "context too long"})
    async with openai_backed.post(MESSAGES, message()) as response:
        assert response.status == 400
        body = await response.json()
    assert body["error"] == {"type": "invalid_request_error", "message": "context too long"}


# -- the official anthropic SDK --------------------------------------------------------------------------------


def sdk(gateway: GatewayHandle) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-alice", max_retries=0)


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic", "gemini", "azure-openai"])
async def test_sdk_create(make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    await mock_llm.script({"content": "Bonjour tout le monde", "usage": {"prompt_tokens": 12, "completion_tokens": 4}})
    result = await sdk(gateway).messages.create(
        model="mock-gpt", max_tokens=64, system="Speak French.", messages=[{"role": "user", "content": "Hello"}]
    )
    assert result.type == "message" and result.role == "assistant"
    assert result.content[0].type == "text" and result.content[0].text == "Bonjour tout le monde"
    assert result.stop_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (12, 4)


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic", "gemini"])
async def test_sdk_stream(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    await mock_llm.script({"content": "one two three four", "usage": {"prompt_tokens": 21, "completion_tokens": 4}})
    async with sdk(gateway).messages.stream(
        model="mock-gpt", max_tokens=64, messages=[{"role": "user", "content": "Count"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "one two three four"
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 4)
    record = (await access_record(caplog, MESSAGES))["ai_log"]
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (21, 4, False)


async def test_sdk_create_stream_true(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "openai-compatible"))
    stream = await sdk(gateway).messages.create(
        model="mock-gpt", max_tokens=64, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in kinds


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic", "gemini"])
async def test_sdk_tool_call_and_result(make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    client = sdk(gateway)
    await mock_llm.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Lima"}}})
    messages: list[Any] = [{"role": "user", "content": "Weather in Lima?"}]
    first = await client.messages.create(model="mock-gpt", max_tokens=64, messages=messages, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Lima"}
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "19C, clear"}]},
    ]
    second = await client.messages.create(model="mock-gpt", max_tokens=64, messages=messages, tools=TOOLS)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    # What reached the provider names the tool result in the provider's own terms.
    sent = json.dumps((await mock_llm.requests())[-1]["body"])
    assert "19C, clear" in sent and "get_weather" in sent


async def test_sdk_stream_tool_call(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "openai-compatible"))
    await mock_llm.script(
        {"content": "Let me look.", "tool_call": {"name": "get_weather", "arguments": {"city": "Kyiv"}}}
    )
    async with sdk(gateway).messages.stream(
        model="mock-gpt", max_tokens=64, messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS
    ) as stream:
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"city": "Kyiv"} and final.stop_reason == "tool_use"  # type: ignore[union-attr]


async def test_sdk_errors(openai_backed: GatewayHandle) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        await sdk(openai_backed).messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    bad = anthropic.AsyncAnthropic(base_url=openai_backed.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await bad.messages.create(model="mock-gpt", max_tokens=5, messages=[{"role": "user", "content": "x"}])


async def test_mid_stream_failure_is_an_anthropic_error_event(openai_backed: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"chunks": 20, "reset_after_chunks": 3})
    async with openai_backed.post(MESSAGES, message(stream=True)) as response:
        assert response.status == 200
        seen = events(await response.read())
    assert seen[0][0] == "message_start"
    assert seen[-1][0] == "error" and seen[-1][1]["error"]["type"] == "api_error"


# -- what current clients send (Claude Code 2.1) ------------------------------------------------------------------


def test_system_role_entries_fold_into_the_system_prompt_in_order() -> None:
    body = message(
        system=[
            {"type": "text", "text": "Top."},
            {"type": "text", "text": "Cached.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
            {"role": "system", "content": "Late."},
        ],
    )
    out = to_openai_request(body)
    assert out["messages"] == [
        {"role": "system", "content": "Top.\n\nCached.\n\n# Environment\n\nLate."},
        {"role": "user", "content": "Hi"},
    ]


def test_thinking_maps_to_reasoning_effort_only_when_enabled_and_newer_fields_are_ignored() -> None:
    extras = {
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "metadata": {"user_id": '{"session_id": "abc"}'},
        "some_future_field": {"x": 1},
    }
    adaptive = to_openai_request(message(thinking={"type": "adaptive", "display": "omitted"}, **extras))
    assert "reasoning_effort" not in adaptive and adaptive["user"] == '{"session_id": "abc"}'
    assert not set(extras) - {"metadata"} & set(adaptive)
    for budget, effort in ((1024, "low"), (8000, "medium"), (32000, "high")):
        out = to_openai_request(message(thinking={"type": "enabled", "budget_tokens": budget}))
        assert out["reasoning_effort"] == effort


def test_deferred_tools_are_left_out_and_server_tools_are_named() -> None:
    deferred = {"name": "DeferredToolPlaceholder", "defer_loading": True, "input_schema": {"type": "object"}}
    out = to_openai_request(message(tools=[*TOOLS, deferred]))
    assert [t["function"]["name"] for t in out["tools"]] == [t["name"] for t in TOOLS]
    with pytest.raises(GatewayError) as info:
        to_openai_request(message(tools=[{"type": "bash_20250124", "name": "bash"}]))
    assert "tools[0]" in info.value.message and "bash_20250124" in info.value.message
