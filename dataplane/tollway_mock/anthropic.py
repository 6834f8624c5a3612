"""The Anthropic Messages protocol: `POST /v1/messages`, whole or streamed, with Anthropic's error shape.

Scripting as for OpenAI. The usage override speaks OpenAI names: prompt_tokens sets input_tokens (the uncached
part, as Anthropic counts it), completion_tokens output_tokens, cached_tokens cache_read_input_tokens and
cache_creation_tokens cache_creation_input_tokens. A stream always reports usage (Anthropic's events carry it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from . import content, sse
from .exchange import ApiError, Dialect, Exchange, Route, answer_pieces
from .script import Behaviour, ToolCall

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(error: ApiError) -> dict[str, Any]:
    default = "api_error" if error.status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(error.status, default), "message": error.message}}


def model_of(_request: web.Request, body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


DIALECT = Dialect("anthropic", error_body, model_of)


async def messages(exchange: Exchange) -> web.StreamResponse:
    body = exchange.body
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, "max_tokens: Field required")
    if not isinstance(body.get("messages"), list):
        raise ApiError(400, "messages: Field required")
    behaviour = exchange.behaviour
    call = behaviour.tool_call
    pieces, cut = answer_pieces(exchange, max_tokens)
    stop_reason = behaviour.finish_reason or ("max_tokens" if cut else "tool_use" if call is not None else "end_turn")
    output = len(pieces) + (content.estimate_tokens(len(call.arguments)) if call is not None else 0)
    usage = _usage(behaviour, content.estimate_tokens(_prompt_chars(body)), output)
    message_id = f"msg_mock_{exchange.record.id}"
    call_id = f"toolu_mock_{exchange.record.id}"

    if body.get("stream") is True:
        return await sse.stream(exchange, _events(message_id, model, pieces, call, call_id, stop_reason, usage))

    blocks: list[dict[str, Any]] = [{"type": "text", "text": "".join(pieces)}] if pieces else []
    if call is not None:
        blocks.append({"type": "tool_use", "id": call_id, "name": call.name, "input": call.input})
    payload: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    if not behaviour.omit_usage:
        payload["usage"] = usage
    return await exchange.send_json(payload, behaviour.success_status)


ROUTES = (Route("POST", re.compile(r"/messages$"), messages, DIALECT),)


def _usage(behaviour: Behaviour, input_tokens: int, output_tokens: int) -> dict[str, int]:
    override = behaviour.usage or {}
    return {
        "input_tokens": override.get("prompt_tokens", input_tokens),
        "cache_creation_input_tokens": override.get("cache_creation_tokens", 0),
        "cache_read_input_tokens": override.get("cached_tokens", 0),
        "output_tokens": override.get("completion_tokens", output_tokens),
    }


def _events(
    message_id: str,
    model: str,
    pieces: list[str],
    call: ToolCall | None,
    call_id: str,
    stop_reason: str,
    usage: dict[str, int],
) -> Iterator[sse.Event]:
    def event(name: str, payload: dict[str, Any], kind: sse.EventKind = "content") -> sse.Event:
        return sse.Event.json({"type": name, **payload}, kind, name)

    start_usage = {**usage, "output_tokens": 1}  # like Anthropic: the input side is final, output is not yet
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield event("message_start", {"message": message}, "preamble")
    index = 0
    if pieces:
        yield event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}}, "preamble")
        yield event("ping", {}, "preamble")
        for piece in pieces:
            yield event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
        yield event("content_block_stop", {"index": index}, "trailer")
        index += 1
    if call is not None:
        block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
        yield event("content_block_start", {"index": index, "content_block": block})
        size = max(1, math.ceil(len(call.arguments) / 3))
        for start in range(0, len(call.arguments), size):
            json_delta = {"type": "input_json_delta", "partial_json": call.arguments[start : start + size]}
            yield event("content_block_delta", {"index": index, "delta": json_delta})
        yield event("content_block_stop", {"index": index}, "trailer")
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    yield event("message_delta", {"delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}, "trailer")
    yield event("message_stop", {}, "trailer")


def _prompt_chars(body: dict[str, Any]) -> int:
    return _text_chars(body.get("system")) + sum(
        _text_chars(m.get("content")) for m in body["messages"] if isinstance(m, dict)
    )


def _text_chars(value: Any) -> int:
    """Characters of text, whether a string or blocks (text blocks and tool results count)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(
            len(b["text"]) if isinstance(b.get("text"), str) else _text_chars(b.get("content"))
            for b in value
            if isinstance(b, dict)
        )
    return 0
