"""The OpenAI Responses API: `POST /v1/responses`, whole or streamed (numbered events), with OpenAI's error shape.

Scripting as for chat completions: content, chunks, tool_call (a `function_call` output item), usage (OpenAI
chat names: prompt_tokens sets input_tokens, completion_tokens output_tokens, cached_tokens the cached input,
reasoning_tokens the reasoning part of the output), errors, delays and resets. max_output_tokens cuts the text
and makes the response `incomplete`. The mock keeps no responses: a `previous_response_id` is unknown to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from . import content, openai, sse
from .exchange import ApiError, Exchange, Route, answer_pieces
from .script import Behaviour


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


async def responses(exchange: Exchange) -> web.StreamResponse:
    body = exchange.body
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "You must provide a model parameter.", "missing_model", "model")
    if not isinstance(body.get("input"), str | list):
        raise ApiError(400, "'input' must be a string or an array of input items.", "invalid_value", "input")
    previous = body.get("previous_response_id")
    if previous is not None:
        raise ApiError(404, f"Previous response with id '{previous}' not found.", "previous_response_not_found")
    limit = body.get("max_output_tokens")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    behaviour = exchange.behaviour
    call = behaviour.tool_call
    pieces, cut = answer_pieces(exchange, limit)
    record_id = exchange.record.id
    output_tokens = len(pieces) + (content.estimate_tokens(len(call.arguments)) if call is not None else 0)
    usage = _usage(behaviour, content.estimate_tokens(_prompt_chars(body)), output_tokens)
    response = _envelope(body, f"resp_mock_{record_id}", int(exchange.record.received_at), model)
    response["status"] = "incomplete" if cut else "completed"
    response["incomplete_details"] = {"reason": "max_output_tokens"} if cut else None
    response["completed_at"] = None if cut else response["created_at"]
    response["usage"] = usage
    message = {
        "id": f"msg_mock_{record_id}",
        "type": "message",
        "status": "incomplete" if cut else "completed",
        "role": "assistant",
        "content": [_text_part("".join(pieces))],
    }
    function_call = (
        {
            "id": f"fc_mock_{record_id}",
            "type": "function_call",
            "status": "completed",
            "arguments": call.arguments,
            "call_id": f"call_mock_{record_id}",
            "name": call.name,
        }
        if call is not None
        else None
    )
    if body.get("stream") is True:
        return await sse.stream(exchange, _events(response, message if pieces else None, function_call))
    response["output"] = ([message] if pieces or call is None else []) + ([function_call] if function_call else [])
    if response["usage"] is None:
        del response["usage"]
    return await exchange.send_json(response, behaviour.success_status)


ROUTES = (Route("POST", re.compile(r"/responses$"), responses, openai.DIALECT),)


def _envelope(body: dict[str, Any], response_id: str, created_at: int, model: str) -> dict[str, Any]:
    """Every field of a response object, echoing the request the way the OpenAI API does."""

    def given(name: str, default: Any) -> Any:
        value = body.get(name)
        return default if value is None else value

    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": model,
        "previous_response_id": None,
        "instructions": body.get("instructions") if isinstance(body.get("instructions"), str) else None,
        "output": [],
        "error": None,
        "tools": [
            {"description": None, "parameters": None, "strict": None, **tool}
            for tool in given("tools", [])
            if isinstance(tool, dict) and tool.get("type") == "function"
        ],
        "tool_choice": given("tool_choice", "auto"),
        "truncation": given("truncation", "disabled"),
        "parallel_tool_calls": given("parallel_tool_calls", True),
        "text": given("text", {"format": {"type": "text"}}),
        "top_p": given("top_p", 1.0),
        "presence_penalty": given("presence_penalty", 0.0),
        "frequency_penalty": given("frequency_penalty", 0.0),
        "top_logprobs": given("top_logprobs", 0),
        "temperature": given("temperature", 1.0),
        "reasoning": {"effort": None, "summary": None, **given("reasoning", {})},
        "usage": None,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "store": given("store", True),
        "background": False,
        "service_tier": "default",
        "metadata": given("metadata", {}),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }


def _usage(behaviour: Behaviour, input_tokens: int, output_tokens: int) -> dict[str, Any] | None:
    if behaviour.omit_usage:
        return None
    override = behaviour.usage or {}
    input_tokens = override.get("prompt_tokens", input_tokens)
    output_tokens = override.get("completion_tokens", output_tokens)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": override.get("cached_tokens", 0)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": override.get("reasoning_tokens", 0)},
        "total_tokens": override.get("total_tokens", input_tokens + output_tokens),
    }


def _events(
    response: dict[str, Any], message: dict[str, Any] | None, function_call: dict[str, Any] | None
) -> Iterator[sse.Event]:
    sequence = 0

    def event(kind: str, payload: dict[str, Any], phase: sse.EventKind = "content") -> sse.Event:
        nonlocal sequence
        data = {"type": kind, "sequence_number": sequence, **payload}
        sequence += 1
        return sse.Event.json(data, phase, kind)

    opening = {**response, "status": "in_progress", "incomplete_details": None, "usage": None}
    yield event("response.created", {"response": opening}, "preamble")
    yield event("response.in_progress", {"response": opening}, "preamble")
    output: list[dict[str, Any]] = []
    if message is not None:
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        text = message["content"][0]["text"]
        added = {**message, "status": "in_progress", "content": []}
        yield event("response.output_item.added", {"output_index": 0, "item": added}, "preamble")
        yield event("response.content_part.added", {**where, "part": _text_part("")}, "preamble")
        for piece in content.split_words(text):
            yield event("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        yield event("response.output_text.done", {**where, "text": text, "logprobs": []}, "trailer")
        yield event("response.content_part.done", {**where, "part": _text_part(text)}, "trailer")
        yield event("response.output_item.done", {"output_index": 0, "item": message}, "trailer")
        output.append(message)
    if function_call is not None:
        index = len(output)
        added = {**function_call, "status": "in_progress", "arguments": ""}
        yield event("response.output_item.added", {"output_index": index, "item": added})
        arguments = function_call["arguments"]
        size = max(1, math.ceil(len(arguments) / 3))
        for start in range(0, len(arguments), size):
            delta = {"item_id": function_call["id"], "output_index": index, "delta": arguments[start : start + size]}
            yield event("response.function_call_arguments.delta", delta)
        done = {"item_id": function_call["id"], "output_index": index, "name": function_call["name"]}
        yield event("response.function_call_arguments.done", {**done, "arguments": arguments}, "trailer")
        yield event("response.output_item.done", {"output_index": index, "item": function_call}, "trailer")
        output.append(function_call)
    kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
    yield event(kind, {"response": {**response, "output": output}}, "trailer")


def _prompt_chars(body: dict[str, Any]) -> int:
    instructions = body.get("instructions")
    return (len(instructions) if isinstance(instructions, str) else 0) + _chars(body.get("input"))


def _chars(value: Any) -> int:
    """Characters of the texts in an input: strings, text parts, function call outputs."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_chars(value.get(key)) for key in ("text", "content", "output"))
    return 0
