"""OpenAI answers in Anthropic Messages shape, for callers of the `/messages` entry.

Web-search citations: OpenAI `url_citation` annotations (`message.annotations`, or a stream's
`delta.annotations`) become `web_search_result_location` citations on the text block, as a whole answer's
`citations` list or as `citations_delta` events before the text block closes. The same one text block carries
them in both forms (the stream's text has gone out before its citations are known, so blocks are never split
around cited spans). They carry the result's URL and title; `cited_text` and `encrypted_index` are empty, since
the gateway's search has no excerpt index for Anthropic to resolve (this entry ignores citations it is sent back).

Usage: OpenAI's prompt_tokens counts cache reads, Anthropic's input_tokens does not, so input_tokens is
prompt_tokens minus cached_tokens and the cached part is cache_read_input_tokens. OpenAI streams report usage
only at their end: message_start then says input_tokens 0, and message_delta carries the real counts (its usage
fields are cumulative totals that clients let override message_start's).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from ..providers.chat import obj
from ..sse import event_data

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_TYPES = frozenset(ERROR_TYPES.values()) | {"billing_error"}


def error_type(status: int, type: str | None) -> str:
    if type in _ANTHROPIC_TYPES:
        return type  # already an Anthropic name (most OpenAI names coincide, or an Anthropic upstream's own)
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage(usage: Any) -> dict[str, int]:
    data = usage if isinstance(usage, dict) else {}
    details = data.get("prompt_tokens_details")
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else 0
    return {
        "input_tokens": max(0, _count(data, "prompt_tokens") - cached),
        "output_tokens": _count(data, "completion_tokens"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def message_id(openai_id: Any) -> str:
    text = str(openai_id or "")
    if text.startswith("msg_"):
        return text
    return f"msg_{text}" if text else f"msg_{secrets.token_hex(12)}"


def stop_reason(finish_reason: Any) -> str:
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def citations(annotations: Any) -> list[dict[str, Any]]:
    """OpenAI url_citation annotations as Anthropic web search citations (other annotation types are skipped)."""
    out = []
    for annotation in annotations if isinstance(annotations, list) else []:
        citation = obj(annotation).get("url_citation") if obj(annotation).get("type") == "url_citation" else None
        if isinstance(citation, dict) and isinstance(citation.get("url"), str):
            out.append(
                {
                    "type": "web_search_result_location",
                    "url": citation["url"],
                    "title": citation.get("title") if isinstance(citation.get("title"), str) else None,
                    "cited_text": "",
                    "encrypted_index": "",
                }
            )
    return out


def sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class AnthropicEventStream:
    """OpenAI chunk events in, Anthropic stream events out, one content block at a time."""

    __slots__ = (
        "_ended",
        "_model",
        "_next_block",
        "_open_block",
        "_started",
        "_stop",
        "_text_block",
        "_tools",
        "_usage",
    )

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._ended = False
        self._open_block: int | None = None  # index of the open content block
        self._next_block = 0
        self._text_block: int | None = None
        self._tools: dict[int, int] = {}  # OpenAI tool call index -> content block index
        self._stop: str | None = None
        self._usage: Any = None

    def feed(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            payload = event_data(event)
            if payload == b"[DONE]":
                out.extend(self._close())
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict) or self._ended:
                continue
            if isinstance(data.get("error"), dict):
                out.extend(self._error(data["error"]))
            else:
                out.extend(self._chunk(data))
        return out

    def finish(self) -> list[bytes]:
        if self._ended or not self._started:
            return []
        if self._stop is not None:  # a finish reason but no [DONE]: the answer is whole
            return self._close()
        return self._error({"message": "The upstream stream ended before the answer was complete."})

    def _chunk(self, data: dict[str, Any]) -> list[bytes]:
        out = self._start(data)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._text(text))
            if delta.get("annotations"):
                out.extend(self._citations(delta["annotations"]))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.extend(self._tool(call))
            if choice.get("finish_reason"):
                self._stop = stop_reason(choice["finish_reason"])
                out.extend(self._close_block())
        return out

    def _start(self, data: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        usage = anthropic_usage(data.get("usage")) if isinstance(data.get("usage"), dict) else None
        message: dict[str, Any] = {
            "id": message_id(data.get("id")),
            "type": "message",
            "role": "assistant",
            "model": str(data.get("model") or self._model),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**(usage or {"input_tokens": 0}), "output_tokens": 0},
        }
        return [sse("message_start", {"type": "message_start", "message": message})]

    def _open(self, block: dict[str, Any]) -> tuple[int, list[bytes]]:
        out = self._close_block()
        index = self._open_block = self._next_block
        self._next_block += 1
        out.append(sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        return index, out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._text_block is None or self._open_block != self._text_block:
            self._text_block, out = self._open({"type": "text", "text": ""})
        delta = {
            "type": "content_block_delta",
            "index": self._text_block,
            "delta": {"type": "text_delta", "text": text},
        }
        out.append(sse("content_block_delta", delta))
        return out

    def _citations(self, annotations: Any) -> list[bytes]:
        """Citations for the open text block (they come before the finish chunk that closes it)."""
        index = self._text_block
        if index is None or self._open_block != index:
            return []
        return [
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "citations_delta", "citation": c}},
            )
            for c in citations(annotations)
        ]

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        position = call.get("index", 0)
        function = obj(call.get("function"))
        if position not in self._tools:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{secrets.token_hex(12)}"),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            self._tools[position], out = self._open(block)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._tools[position], "delta": delta},
                )
            )
        return out

    def _close_block(self) -> list[bytes]:
        if self._open_block is None:
            return []
        index, self._open_block = self._open_block, None
        return [sse("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _close(self) -> list[bytes]:
        if self._ended:
            return []
        out = self._start({})
        out.extend(self._close_block())
        self._ended = True
        usage = anthropic_usage(self._usage) if self._usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self._stop or "end_turn", "stop_sequence": None}
        out.append(sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out

    def _error(self, error: dict[str, Any]) -> list[bytes]:
        self._ended = True
        kind = error.get("type") if error.get("type") in _ANTHROPIC_TYPES else "api_error"
        message = str(error.get("message") or "upstream stream error")
        return [sse("error", {"type": "error", "error": {"type": kind, "message": message}})]


class AnthropicAnswers:
    """OpenAI answers (whole, streamed, errors) in the Messages API's shapes."""

    def body(self, openai_body: bytes) -> bytes:
        try:
            data = orjson.loads(openai_body)
        except orjson.JSONDecodeError:
            return openai_body
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            return openai_body
        choice = data["choices"][0] if data["choices"] and isinstance(data["choices"][0], dict) else {}
        message = obj(choice.get("message"))
        content: list[dict[str, Any]] = []
        if isinstance(message.get("content"), str) and message["content"]:
            block: dict[str, Any] = {"type": "text", "text": message["content"]}
            cited = citations(message.get("annotations"))
            if cited:
                block["citations"] = cited
            content.append(block)
        for call in message.get("tool_calls") or []:
            call = obj(call)
            function = obj(call.get("function"))
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or f"toolu_{secrets.token_hex(12)}"),
                    "name": str(function.get("name") or ""),
                    "input": tool_input(function.get("arguments")),
                }
            )
        answer = {
            "id": message_id(data.get("id")),
            "type": "message",
            "role": "assistant",
            "model": str(data.get("model") or ""),
            "content": content,
            "stop_reason": stop_reason(choice.get("finish_reason")),
            "stop_sequence": None,
            "usage": anthropic_usage(data.get("usage")),
        }
        return orjson.dumps(answer)

    def stream(self, model: str) -> AnthropicEventStream:
        return AnthropicEventStream(model)

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes:
        return orjson.dumps({"type": "error", "error": {"type": error_type(status, type), "message": message}})

    def stream_error_event(self, message: str, code: str | None) -> bytes:
        return sse("error", {"type": "error", "error": {"type": "api_error", "message": message}})
