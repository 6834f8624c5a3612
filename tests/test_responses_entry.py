"""The Responses API entry without a network: request conversion, the native body under stage edits, whole
answers and the event sequence, each object and event validated against the Open Responses specification."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from fixtures.openresponses.schema import assert_event, assert_events, assert_response
from tollway_dataplane.answer import OPENAI, RESPONSES, Answer
from tollway_dataplane.caller.base import CallerContext
from tollway_dataplane.caller.responses import DIALECT, to_chat
from tollway_dataplane.caller.responses import RESPONSES as ENTRY
from tollway_dataplane.caller.responses_answer import ResponsesAnswers, ResponsesEventStream, envelope
from tollway_dataplane.caller.responses_store import MemoryResponseStore, StoredResponse
from tollway_dataplane.errors import GatewayError

TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
NAMESPACE = {
    "type": "namespace",
    "name": "agents",
    "description": "Sub-agents",
    "tools": [{"type": "function", "name": "spawn", "description": "Start one", "parameters": {"type": "object"}}],
}


def agent_request(**extra: Any) -> dict[str, Any]:
    """A turn shaped like what coding agents send: developer messages, a tool round trip, hosted tools."""
    return {
        "model": "mock-gpt",
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be careful."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List files"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd": "ls"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\nb.txt"},
            {"role": "user", "content": "Now spawn a helper"},
        ],
        "tools": [TOOL, NAMESPACE, {"type": "web_search", "external_web_access": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"effort": "high", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"session_id": "s"},
        "some_future_field": {"x": 1},
        **extra,
    }


# -- the request as a chat request ------------------------------------------------------------------------------


def test_an_agent_turn_converts_to_chat() -> None:
    chat, conversion = to_chat(agent_request())
    assert chat["messages"] == [
        {"role": "system", "content": "You are a coding agent.\n\nBe careful."},  # one system turn
        {"role": "user", "content": "List files"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "exec_command", "arguments": '{"cmd": "ls"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a.txt\nb.txt"},
        {"role": "user", "content": "Now spawn a helper"},
    ]
    assert [t["function"]["name"] for t in chat["tools"]] == ["exec_command", "agents__spawn"]
    assert chat["tools"][1]["function"] == {
        "name": "agents__spawn",
        "description": "Start one",
        "parameters": {"type": "object"},
    }
    assert (chat["tool_choice"], chat["parallel_tool_calls"], chat["reasoning_effort"]) == ("auto", True, "high")
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    # Fields a translated pool has no use for never reach it; unknown ones are not an error either.
    for name in ("include", "prompt_cache_key", "client_metadata", "store", "some_future_field", "instructions"):
        assert name not in chat
    assert conversion.dropped == ["item:reasoning"]
    assert chat["web_search_options"] == {}  # the hosted tool, for the route's web-search stage
    assert conversion.names == {"agents__spawn": ("agents", "spawn")}


def test_string_input_sampling_and_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat, _ = to_chat(
        {
            "model": "m",
            "input": "Hi",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
            "safety_identifier": "user-7",
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}},
        "user": "user-7",
    }


def test_images_files_and_tool_output_images() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,QUJD", "detail": "low"}
    chat, conversion = to_chat(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look"},
                        image,
                        {"type": "input_file", "file_data": "data:application/pdf;base64,UERG", "filename": "a.pdf"},
                        {"type": "input_image", "file_id": "file-1"},
                    ],
                },
                {"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "shot", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_text", "text": "ok"}, image],
                },
                {"type": "function_call_output", "call_id": "c2", "output": "none"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Seen."}]},
            ],
        }
    )
    messages = chat["messages"]
    assert messages[0]["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "low"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,UERG", "filename": "a.pdf"}},
    ]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]  # parallel calls: one assistant turn
    # Tool messages stay together after the calls; the image of a tool output follows them in a user turn.
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "tool", "tool_call_id": "c2", "content": "none"},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD", "detail": "low"}}],
        },
        {"role": "assistant", "content": "Seen."},
    ]
    assert conversion.dropped == ["part:input_image.file_id"]


def test_namespaced_calls_in_the_history_and_tool_choices() -> None:
    chat, _ = to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "c", "namespace": "agents", "name": "spawn", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "started"},
            ],
            "tools": [NAMESPACE],
            "tool_choice": {"type": "function", "namespace": "agents", "name": "spawn"},
        }
    )
    assert chat["messages"][1]["tool_calls"][0]["function"]["name"] == "agents__spawn"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "agents__spawn"}}
    # A tool choice naming a hosted tool goes with the tool; no tools left means no tool choice either.
    chat, conversion = to_chat(
        {"model": "m", "input": "x", "tools": [{"type": "file_search"}], "tool_choice": {"type": "file_search"}}
    )
    assert "tools" not in chat and "tool_choice" not in chat and conversion.dropped == ["tool:file_search"]
    # The web-search tool, under any of its names, becomes web_search_options; forcing it needs nothing more.
    located = {"type": "approximate", "city": "Paris", "country": "FR", "region": 7}
    for kind in ("web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26"):
        tool = {"type": kind, "search_context_size": "high", "user_location": located}
        chat, conversion = to_chat({"model": "m", "input": "x", "tools": [tool], "tool_choice": {"type": kind}})
        assert chat["web_search_options"] == {
            "search_context_size": "high",
            "user_location": {"type": "approximate", "approximate": {"city": "Paris", "country": "FR"}},
        }
        assert "tools" not in chat and "tool_choice" not in chat and conversion.dropped == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m"}, "'input'"),
        ({"model": "m", "input": 5}, "'input'"),
        ({"model": "m", "input": ["x"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "input[0].content[0].type"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"model": "m", "input": "x", "tools": {}}, "'tools'"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "x", "tools": [TOOL], "tool_choice": 3}, "'tool_choice'"),
        ({"model": "m", "input": "x", "max_output_tokens": "many"}, "'max_output_tokens'"),
        ({"model": "m", "input": "x", "stream": "yes"}, "'stream'"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as info:
        to_chat(body)
    assert info.value.status == 400 and field in info.value.message


def caller(store: MemoryResponseStore | None = None, consumer: str = "default/alice") -> CallerContext:
    return CallerContext(consumer, store if store is not None else MemoryResponseStore())


@pytest.mark.parametrize(
    ("extra", "code"),
    [({"background": True}, "unsupported_parameter"), ({"conversation": "conv_1"}, "unsupported_parameter")],
)
async def test_refused_features(extra: dict[str, Any], code: str) -> None:
    with pytest.raises(GatewayError) as info:
        await ENTRY.intake({"model": "m", "input": "x", **extra}, caller())
    assert (info.value.status, info.value.code) == (400, code)


async def test_intake_keeps_the_callers_body_and_continues_stored_conversations() -> None:
    store = MemoryResponseStore()
    body = agent_request(stream=False)
    intake = await ENTRY.intake(body, caller(store))
    assert intake.native is not None and intake.native.body is body and intake.native.dialect.name == RESPONSES
    assert intake.notes == {"responses": {"dropped": ["item:reasoning"], "web_search": "requested"}}
    earlier = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Before"}]}]
    answer = {
        "id": "resp_1",
        "output": [
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Earlier answer"}]}
        ],
    }
    await store.put("default/alice", StoredResponse(answer, earlier))
    intake = await ENTRY.intake({"model": "m", "input": "Next", "previous_response_id": "resp_1"}, caller(store))
    assert [m["content"] for m in intake.chat["messages"]] == ["Before", "Earlier answer", "Next"]
    assert intake.native is not None and "previous_response_id" not in intake.native.body
    assert [i["type"] for i in intake.native.body["input"]] == ["message", "message", "message"]
    # Another consumer's response is not found, exactly like one that never existed.
    for who, response_id in (("default/bob", "resp_1"), ("default/alice", "resp_nope")):
        with pytest.raises(GatewayError) as info:
            await ENTRY.intake({"model": "m", "input": "x", "previous_response_id": response_id}, caller(store, who))
        assert (info.value.status, info.value.code) == (404, "previous_response_not_found")


# -- the native body under stage edits ---------------------------------------------------------------------------


def test_stage_edits_apply_to_the_native_body() -> None:
    body = {"model": "m", "instructions": "Be brief", "input": "Mail a@b.c", "tools": [TOOL]}
    added = DIALECT.add_messages(
        body, [{"role": "system", "content": "Platform"}], [{"role": "user", "content": "Bye"}]
    )
    assert added["input"] == [
        {"type": "message", "role": "system", "content": "Platform"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Mail a@b.c"}]},
        {"type": "message", "role": "user", "content": "Bye"},
    ]
    assert body["input"] == "Mail a@b.c" and added["tools"] == [TOOL]  # a copy, everything else kept
    seen: list[tuple[str, str]] = []

    def mask(role: str, text: str) -> str:
        seen.append((role, text))
        return text.replace("a@b.c", "[email]")

    rewritten = DIALECT.rewrite_texts(
        agent_request(input=[*agent_request()["input"], {"role": "user", "content": "a@b.c"}]), mask
    )
    assert rewritten["input"][-1]["content"] == "[email]"
    assert ("system", "You are a coding agent.") in seen and ("tool", "a.txt\nb.txt") in seen
    assert ("developer", "Be careful.") in seen
    assert DIALECT.rewrite_texts(body, mask)["input"] == "Mail [email]"


# -- answers -----------------------------------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, usage: Any = None) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "served-model"}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def events_of(data: list[bytes]) -> list[dict[str, Any]]:
    """The events of a Responses stream; the `event:` line and the payload's type must agree."""
    out = []
    for block in b"".join(data).split(b"\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n"))
        payload = json.loads(lines[b"data"])
        assert payload["type"] == lines[b"event"].decode()
        out.append(payload)
    return out


def answers_for(request: dict[str, Any], store: MemoryResponseStore | None = None) -> ResponsesAnswers:
    _, conversion = to_chat(request)
    return ResponsesAnswers(request, [], conversion.names, caller(store))


USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 12,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


async def test_whole_answer_with_text_and_a_namespaced_call() -> None:
    completion = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Starting one.",
                    "tool_calls": [
                        {
                            "id": "call_7",
                            "type": "function",
                            "function": {"name": "agents__spawn", "arguments": '{"n": 1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    store = MemoryResponseStore()
    request = agent_request(stream=False, store=True)
    answers = answers_for(request, store)
    filter = answers.answer_filter(Answer(model="m"))
    filter.start(Answer(model="m"))
    response = json.loads(await filter.body(orjson.dumps(completion)))
    assert_response(response)
    assert response["id"] == answers.response_id and response["status"] == "completed"
    assert response["model"] == "served-model" and response["instructions"] == "You are a coding agent."
    message, call = response["output"]
    assert message["type"] == "message" and message["content"][0]["text"] == "Starting one."
    assert {k: call[k] for k in ("type", "call_id", "namespace", "name", "arguments", "status")} == {
        "type": "function_call",
        "call_id": "call_7",
        "namespace": "agents",
        "name": "spawn",
        "arguments": '{"n": 1}',
        "status": "completed",
    }
    assert response["usage"] == {
        "input_tokens": 50,
        "input_tokens_details": {"cached_tokens": 8},
        "output_tokens": 12,
        "output_tokens_details": {"reasoning_tokens": 5},
        "total_tokens": 62,
    }
    # Only the function tools the model had are echoed: the hosted one was not given to it.
    assert [(t["name"], t.get("namespace")) for t in response["tools"]] == [("exec_command", None), ("spawn", "agents")]
    stored = await store.get("default/alice", answers.response_id)
    assert stored is not None and stored.response == response


async def test_a_cut_answer_is_incomplete_and_store_false_keeps_nothing() -> None:
    store = MemoryResponseStore()
    answers = answers_for({"model": "m", "input": "x", "store": False, "max_output_tokens": 3}, store)
    filter = answers.answer_filter(Answer(model="m"))
    completion = {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b c"}, "finish_reason": "length"}],
    }
    response = json.loads(await filter.body(orjson.dumps(completion)))
    assert_response(response)
    assert response["status"] == "incomplete" and response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete" and response["usage"] is None
    assert response["store"] is False and store.entries == 0


def test_envelope_echoes_the_request_in_the_specifications_shapes() -> None:
    schema = {"type": "object", "properties": {}}
    request = {
        "model": "m",
        "input": "x",
        "previous_response_id": "resp_0",
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema}, "verbosity": "low"},
        "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "f"}]},
        "reasoning": {"effort": "low"},
        "metadata": {"team": "a"},
        "temperature": 0.5,
        "prompt_cache_key": "k",
    }
    response = envelope(request, "resp_1", "m", 1)
    assert_response(response)
    assert response["text"] == {
        "format": {"type": "json_schema", "name": "out", "description": None, "schema": schema, "strict": False},
        "verbosity": "low",
    }
    assert response["reasoning"] == {"effort": "low", "summary": None} and response["metadata"] == {"team": "a"}
    assert (response["previous_response_id"], response["temperature"], response["prompt_cache_key"]) == (
        "resp_0",
        0.5,
        "k",
    )


def text_and_call_stream() -> list[bytes]:
    call = {"index": 0, "id": "call_7", "type": "function", "function": {"name": "agents__spawn", "arguments": ""}}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"n":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage=USAGE),
        b"data: [DONE]\n\n",
    ]


async def test_stream_events_text_then_a_function_call() -> None:
    store = MemoryResponseStore()
    answers = answers_for(agent_request(store=True), store)
    filter = answers.answer_filter(Answer(model="m"))
    out: list[bytes] = []
    for event in text_and_call_stream():  # one upstream event at a time, as the relay feeds them
        out += await filter.feed([event])
    out += await filter.finish()
    events = events_of(out)
    assert_events(events)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[6]["text"] == "Let me check." and events[9]["item"]["name"] == "spawn"
    assert events[12] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 12,
        "item_id": events[9]["item"]["id"],
        "output_index": 1,
        "name": "spawn",
        "arguments": '{"n": 1}',
    }
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["model"] == "served-model"
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert (
        final["output"][1]["namespace"] == "agents" and final["usage"]["output_tokens_details"]["reasoning_tokens"] == 5
    )
    stored = await store.get("default/alice", final["id"])
    assert stored is not None and stored.response == final  # kept before the caller saw it complete


def test_stream_of_a_cut_answer_and_of_an_empty_one() -> None:
    stream = ResponsesEventStream(envelope({"model": "m"}, "resp_1", "m", 1), {})
    events = events_of(stream.feed([chunk({"content": "a b"}), chunk({}, "length"), b"data: [DONE]\n\n"]))
    assert_events(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    stream = ResponsesEventStream(envelope({"model": "m"}, "resp_2", "m", 1), {})
    events = events_of(
        stream.feed([chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), b"data: [DONE]\n\n"])
    )
    assert_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""  # still a message, as whole answers


def test_stream_failures_end_with_response_failed() -> None:
    stream = ResponsesEventStream(envelope({"model": "m"}, "resp_1", "m", 1), {})
    error = b'data: {"error": {"message": "boom", "type": "upstream_error", "code": null}}\n\n'
    events = events_of(stream.feed([chunk({"content": "a"}), error]) + stream.finish())
    assert_events(events)
    assert events[-1]["type"] == "response.failed" and events[-1]["response"]["error"]["message"] == "boom"
    stream = ResponsesEventStream(envelope({"model": "m"}, "resp_2", "m", 1), {})
    events = events_of(stream.feed([chunk({"content": "a"})]) + stream.finish())  # cut: no finish reason
    assert_events(events)
    assert (
        events[-1]["type"] == "response.failed"
        and "before the answer was complete" in events[-1]["response"]["error"]["message"]
    )


async def test_interrupted_streams_end_with_an_event_in_sequence() -> None:
    answers = answers_for({"model": "m", "input": "x"})
    filter = answers.answer_filter(Answer(model="m", dialect=OPENAI))
    out = await filter.feed([chunk({"content": "a"})])
    out.append(
        answers.stream_error_event(
            "The upstream timed out before the answer was complete.", "upstream_stream_interrupted"
        )
    )
    events = events_of(out)
    assert_events(events)
    assert events[-1]["type"] == "response.failed"
    # A native stream: its events pass unchanged, and the gateway's error event is numbered after them.
    answers = answers_for({"model": "m", "input": "x"})
    filter = answers.answer_filter(Answer(model="m", dialect=RESPONSES))
    native = [
        b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n',
        b'event: response.in_progress\ndata: {"type":"response.in_progress","sequence_number":1}\n\n',
    ]
    assert await filter.feed(native) == native
    (error,) = events_of([answers.stream_error_event("cut", "upstream_stream_interrupted")])
    assert_event(error)
    assert error["sequence_number"] == 2 and error["code"] == "upstream_stream_interrupted"
    assert error["error"]["message"] == "cut"


async def test_native_answers_pass_unchanged_and_are_kept() -> None:
    store = MemoryResponseStore()
    answers = answers_for({"model": "m", "input": "x"}, store)
    filter = answers.answer_filter(Answer(model="m", dialect=RESPONSES))
    filter.start(Answer(model="m", dialect=RESPONSES))
    body = orjson.dumps({"id": "resp_native", "object": "response", "status": "completed", "output": []})
    assert await filter.body(body) == body
    assert await store.get("default/alice", "resp_native") is not None
