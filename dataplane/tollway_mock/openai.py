"""The OpenAI wire protocol: chat completions, legacy completions, embeddings and the model list."""

from __future__ import annotations

import base64
import math
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from . import content, sse
from .exchange import ApiError, Dialect, Exchange, Route, echo_document
from .script import Behaviour, ToolCall

MODELS = ("mock-gpt", "mock-gpt-mini", "mock-embedding")
_MODELS_CREATED = 1_700_000_000
DEFAULT_DIMENSIONS = 8
_MAX_DIMENSIONS = 8192

# (type, code) by status, as OpenAI reports them; anything else 4xx is an invalid request.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(error: ApiError) -> dict[str, Any]:
    default = ("server_error", None) if error.status >= 500 else ("invalid_request_error", None)
    kind, code = _ERROR_KINDS.get(error.status, default)
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code or code}}


def model_of(_request: web.Request, body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


DIALECT = Dialect("openai", error_body, model_of)


async def chat_completions(exchange: Exchange) -> web.StreamResponse:
    body = _body(exchange)
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise ApiError(400, "'messages' must be an array", "invalid_messages", "messages")
    prompt_tokens = content.estimate_tokens(sum(_message_chars(m) for m in messages))
    max_tokens = _optional_int(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_int(body, "max_tokens")
    behaviour = exchange.behaviour
    call = behaviour.tool_call
    pieces: list[str]
    if call is not None and behaviour.content is None and not behaviour.echo:
        pieces, finish_reason = [], "tool_calls"  # a tool call alone, the way models usually answer with one
    else:
        pieces, finish_reason = _completion(exchange, max_tokens)
    finish_reason = behaviour.finish_reason or ("tool_calls" if call is not None else finish_reason)
    call_tokens = content.estimate_tokens(len(call.arguments)) if call is not None else 0
    usage = _usage(behaviour, prompt_tokens, len(pieces) + call_tokens)
    completion_id = f"chatcmpl-mock-{exchange.record.id}"
    call_id = f"call_mock_{exchange.record.id}"

    if body.get("stream") is True:
        opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        base = _base(completion_id, "chat.completion.chunk", exchange, model)
        calls = _tool_call_deltas(call, call_id) if call is not None else []
        events = _stream_events(base, pieces, finish_reason, _if_asked(body, usage), _chat_delta, opening, calls)
        return await sse.stream(exchange, events)

    message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
    if call is not None:
        message["content"] = message["content"] or None
        function = {"name": call.name, "arguments": call.arguments}
        message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
    payload = _base(completion_id, "chat.completion", exchange, model)
    payload["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}]
    return await _send_with_usage(exchange, payload, usage)


async def completions(exchange: Exchange) -> web.StreamResponse:
    body = _body(exchange)
    model = _model(body)
    prompt_tokens = _prompt_tokens(body.get("prompt", ""), "prompt")
    pieces, finish_reason = _completion(exchange, _optional_int(body, "max_tokens"))
    usage = _usage(exchange.behaviour, prompt_tokens, len(pieces))
    base = _base(f"cmpl-mock-{exchange.record.id}", "text_completion", exchange, model)

    if body.get("stream") is True:
        events = _stream_events(base, pieces, finish_reason, _if_asked(body, usage), _text_choice)
        return await sse.stream(exchange, events)

    base["choices"] = [{"text": "".join(pieces), "index": 0, "logprobs": None, "finish_reason": finish_reason}]
    return await _send_with_usage(exchange, base, usage)


async def embeddings(exchange: Exchange) -> web.StreamResponse:
    body = _body(exchange)
    model = _model(body)
    items = _embedding_inputs(body.get("input"))
    dimensions = _optional_int(body, "dimensions", minimum=1) or DEFAULT_DIMENSIONS
    if dimensions > _MAX_DIMENSIONS:
        raise ApiError(400, f"'dimensions' must be at most {_MAX_DIMENSIONS}", "invalid_value", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", "invalid_value", "encoding_format")
    data = [
        {"object": "embedding", "index": index, "embedding": _encode(content.embedding(item, dimensions), encoding)}
        for index, item in enumerate(items)
    ]
    prompt_tokens = sum(_prompt_tokens(item, "input") for item in items)
    payload = {"object": "list", "data": data, "model": model}
    return await _send_with_usage(exchange, payload, _usage(exchange.behaviour, prompt_tokens, None))


async def list_models(exchange: Exchange) -> web.StreamResponse:
    data = [
        {"id": model, "object": "model", "created": _MODELS_CREATED, "owned_by": "tollway-mock"} for model in MODELS
    ]
    return await exchange.send_json({"object": "list", "data": data}, exchange.behaviour.success_status)


# Searched in order: the chat suffix must win over the shorter legacy completions suffix.
def chat_prompt(body: Any) -> str:
    """The text a chat template would turn into the prompt: each message's role and text, in order."""
    messages = body.get("messages") if isinstance(body, dict) else None
    parts = []
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            text = message.get("content")
            if isinstance(text, list):
                text = "".join(p["text"] for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
            parts.append(f"<|{message.get('role')}|>{text if isinstance(text, str) else ''}")
    return "".join(parts)


def completion_prompt(body: Any) -> str:
    prompt = body.get("prompt") if isinstance(body, dict) else None
    return prompt if isinstance(prompt, str) else ""


ROUTES = (
    Route("POST", re.compile(r"/chat/completions$"), chat_completions, DIALECT, chat_prompt),
    Route("POST", re.compile(r"/completions$"), completions, DIALECT, completion_prompt),
    Route("POST", re.compile(r"/embeddings$"), embeddings, DIALECT),
    Route("GET", re.compile(r"/models$"), list_models, DIALECT),
)


def _base(completion_id: str, kind: str, exchange: Exchange, model: str) -> dict[str, Any]:
    return {"id": completion_id, "object": kind, "created": int(exchange.record.received_at), "model": model}


def _if_asked(body: dict[str, Any], usage: dict[str, int] | None) -> dict[str, int] | None:
    """Streams carry usage only when the request set stream_options.include_usage."""
    options = body.get("stream_options")
    return usage if isinstance(options, dict) and options.get("include_usage") is True else None


def _stream_events(
    base: dict[str, Any],
    pieces: list[str],
    finish_reason: str,
    usage: dict[str, int] | None,
    choice: Callable[[str | None, str | None], dict[str, Any]],
    opening: dict[str, Any] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> Iterator[sse.Event]:
    def chunk(choice_body: dict[str, Any], kind: sse.EventKind) -> sse.Event:
        event = {**base, "choices": [choice_body]}
        if usage is not None:
            event["usage"] = None  # like OpenAI: every chunk has the key once usage was asked for
        return sse.Event.json(event, kind)

    if opening is not None:
        yield chunk(opening, "preamble")
    for piece in pieces:
        yield chunk(choice(piece, None), "content")
    for delta in extra or ():
        yield chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}, "content")
    yield chunk(choice(None, finish_reason), "trailer")
    if usage is not None:
        yield sse.Event.json({**base, "choices": [], "usage": usage}, "trailer")
    yield sse.Event(b"[DONE]", "trailer")


def _tool_call_deltas(call: ToolCall, call_id: str) -> list[dict[str, Any]]:
    """The call's opening delta (id and name), then its arguments in a few pieces, as OpenAI streams them."""
    opening = {"index": 0, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}
    size = max(1, math.ceil(len(call.arguments) / 3))
    pieces = [call.arguments[i : i + size] for i in range(0, len(call.arguments), size)]
    return [{"tool_calls": [opening]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in pieces
    ]


def _chat_delta(piece: str | None, finish_reason: str | None) -> dict[str, Any]:
    delta = {} if piece is None else {"content": piece}
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _text_choice(piece: str | None, finish_reason: str | None) -> dict[str, Any]:
    return {"text": piece or "", "index": 0, "logprobs": None, "finish_reason": finish_reason}


def _completion(exchange: Exchange, max_tokens: int | None) -> tuple[list[str], str]:
    behaviour = exchange.behaviour
    if behaviour.echo:
        text = orjson.dumps(echo_document(exchange.request, exchange.body)).decode()
    else:
        text = behaviour.content if behaviour.content is not None else content.DEFAULT_TEXT
    pieces, cut = content.truncate(content.pieces(text, behaviour.chunks), max_tokens)
    return pieces, "length" if cut else "stop"


def _usage(behaviour: Behaviour, prompt_tokens: int, completion_tokens: int | None) -> dict[str, Any] | None:
    """Counts consistent with what is sent, unless a script overrides them; None when usage is omitted."""
    if behaviour.omit_usage:
        return None
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens}
    if completion_tokens is not None:
        usage["completion_tokens"] = completion_tokens
    override = behaviour.usage or {}
    usage.update((key, value) for key, value in override.items() if key in usage)
    usage["total_tokens"] = override.get("total_tokens", sum(usage.values()))
    if "cached_tokens" in override:
        usage["prompt_tokens_details"] = {"cached_tokens": override["cached_tokens"]}
    if "reasoning_tokens" in override:
        usage["completion_tokens_details"] = {"reasoning_tokens": override["reasoning_tokens"]}
    return usage


async def _send_with_usage(
    exchange: Exchange, payload: dict[str, Any], usage: dict[str, int] | None
) -> web.StreamResponse:
    if usage is not None:
        payload["usage"] = usage
    return await exchange.send_json(payload, exchange.behaviour.success_status)


def _body(exchange: Exchange) -> dict[str, Any]:
    if not isinstance(exchange.body, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_body")
    return exchange.body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "You must provide a model parameter.", "missing_model", "model")
    return model


def _optional_int(body: dict[str, Any], key: str, minimum: int = 0) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ApiError(400, f"'{key}' must be an integer >= {minimum}", "invalid_value", key)
    return value


def _message_chars(message: object) -> int:
    """Characters of a message's text, whether content is a string or a list of content parts."""
    text = message.get("content") if isinstance(message, dict) else None
    if isinstance(text, str):
        return len(text)
    if isinstance(text, list):
        return sum(len(part["text"]) for part in text if isinstance(part, dict) and isinstance(part.get("text"), str))
    return 0


def _prompt_tokens(prompt: object, param: str) -> int:
    """A string is estimated from its length; a token array counts its tokens; a list sums its items."""
    if isinstance(prompt, str):
        return content.estimate_tokens(len(prompt))
    if isinstance(prompt, list):
        if all(_is_token(token) for token in prompt):
            return max(1, len(prompt))
        return sum(_prompt_tokens(item, param) for item in prompt)
    raise ApiError(400, f"'{param}' must be a string, an array of strings or token arrays", "invalid_value", param)


def _embedding_inputs(raw: object) -> list[str | list[int]]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw:
        if all(_is_token(token) for token in raw):
            return [raw]
        if all(isinstance(item, str) for item in raw) or all(
            isinstance(item, list) and item and all(_is_token(t) for t in item) for item in raw
        ):
            return raw
    raise ApiError(400, "'input' must be a string, an array of strings or token arrays", "invalid_value", "input")


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # What the OpenAI SDK asks for by default: little-endian float32, base64-encoded.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
