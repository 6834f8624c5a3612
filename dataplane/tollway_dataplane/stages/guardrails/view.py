"""The answer as the guardrails see it, per dialect: its texts, how to rewrite them, how to end it blocked.

Response filters receive answers in their dialect (`Answer.dialect`): OpenAI chat (and legacy completions) for
every translated answer today; native pass-through answers ("anthropic", "responses") keep the provider's shape.
Everything the guardrails need to know about a shape is behind `AnswerView`: reading its text, the half prompt
capture shares (dialects.py), and rewriting and ending it, here; supporting a dialect is one class registered in
`VIEWS`. A dialect without a view is never passed unchecked: the filter fails closed (or, under
failurePolicy open, lets it through and counts the checker error), and says so.

A stream is written through a `StreamView` the view makes for it: it sees every event as it goes to the caller
(with the text the window gave it) and writes the blocked ending. Chat and Messages streams need nothing more
than the view itself (`PlainStream`); a Responses stream repeats its text in later events, so its stream view keeps
what was sent (responses_view.py).

Request-side replies (a blocked request answered as a completion) are always OpenAI chat: the caller's protocol,
the last filter of the chain, converts them like any answer.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from ...answer import OPENAI, RESPONSES
from ...dialects import (
    CONTENT_FILTER,
    AnthropicText,
    OpenAIText,
    TextReader,
    delta_text,
    event_json,
    is_text_block,
    loads_object,
)
from ...providers.anthropic import ANTHROPIC
from ...providers.chat import DONE_EVENT
from .responses_view import ResponsesView


class AnswerView(TextReader, Protocol):
    def rewrite_body(self, body: bytes, texts: list[str]) -> bytes:
        """The body with its texts (as `body_texts` listed them) replaced."""
        ...

    def blocked_body(self, body: bytes, message: str | None) -> bytes:
        """The body as a blocked answer: the message as its text (or none), finish reason content_filter."""
        ...

    def stream(self) -> StreamView:
        """What writes one stream's events to the caller."""
        ...


class StreamView(Protocol):
    def sent(self, event: bytes, text: str | None) -> bytes:
        """The event on its way to the caller, `text` its new text when the window changed it: what to send."""
        ...

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]:
        """The events that end the stream blocked, after what was sent (`first_event`, the stream's first, gives
        ids and model even when it was held back and dropped)."""
        ...


class _EventRewriter(Protocol):
    def with_event_text(self, event: bytes, text: str) -> bytes: ...

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]: ...


class PlainStream:
    """A stream whose events each stand alone: a rewritten event is all that changes, the block ending is fixed."""

    __slots__ = ("_view",)

    def __init__(self, view: _EventRewriter):
        self._view = view

    def sent(self, event: bytes, text: str | None) -> bytes:
        return event if text is None else self._view.with_event_text(event, text)

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]:
        return self._view.block_events(first_event, message)


class OpenAIView(OpenAIText):
    """chat.completion / chat.completion.chunk, and text_completion (legacy completions), choice by choice."""

    def rewrite_body(self, body: bytes, texts: list[str]) -> bytes:
        data = loads_object(body) or {}
        choices = data.get("choices") or []
        for choice, text in zip(choices, texts, strict=False):
            if isinstance(choice, dict):
                _set_choice_text(choice, text)
        return orjson.dumps(data)

    def blocked_body(self, body: bytes, message: str | None) -> bytes:
        data = loads_object(body) or {}
        choices = data.get("choices") or [{"index": 0}]
        for choice in choices:
            if isinstance(choice, dict):
                _set_choice_text(choice, message or "")
                choice["finish_reason"] = CONTENT_FILTER
                message_obj = choice.get("message")
                if isinstance(message_obj, dict):
                    message_obj.pop("tool_calls", None)
                    message_obj.pop("function_call", None)
        data["choices"] = choices
        return orjson.dumps(data)

    def with_event_text(self, event: bytes, text: str) -> bytes:
        data = event_json(event)
        if data is None:
            return event
        first = True
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or not delta_text(choice):
                continue
            # n > 1 streams are checked as one text: the rewritten text goes to the first choice carrying text.
            _set_delta_text(choice, text if first else "")
            first = False
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]:
        base = event_json(first_event) if first_event is not None else None
        base = base or {}
        legacy = base.get("object") == "text_completion"
        choice: dict[str, Any] = (
            {"text": message or "", "index": 0, "logprobs": None, "finish_reason": CONTENT_FILTER}
            if legacy
            else {
                "index": 0,
                "delta": {"content": message} if message else {},
                "logprobs": None,
                "finish_reason": CONTENT_FILTER,
            }
        )
        chunk = {
            "id": base.get("id") or "chatcmpl-guardrail",
            "object": "text_completion" if legacy else "chat.completion.chunk",
            "created": base.get("created") or int(time.time()),
            "model": base.get("model") or "",
            "choices": [choice],
        }
        return [b"data: " + orjson.dumps(chunk) + b"\n\n", DONE_EVENT]

    def stream(self) -> StreamView:
        return PlainStream(self)


class AnthropicView(AnthropicText):
    """A native Messages answer (a `/messages` request an Anthropic pool served as sent): the text blocks of the
    message, and the `text_delta`s of its stream. A blocked answer stops with `refusal`, Anthropic's own word."""

    def rewrite_body(self, body: bytes, texts: list[str]) -> bytes:
        data = loads_object(body) or {}
        first = True
        for block in data.get("content") or ():
            if is_text_block(block):
                block["text"] = texts[0] if first and texts else ""  # one text per answer: it goes to the first
                first = False
        return orjson.dumps(data)

    def blocked_body(self, body: bytes, message: str | None) -> bytes:
        data = loads_object(body) or {}
        data["content"] = [{"type": "text", "text": message}] if message else []
        data["stop_reason"] = "refusal"
        return orjson.dumps(data)

    def with_event_text(self, event: bytes, text: str) -> bytes:
        data = event_json(event)
        if data is None or not isinstance(data.get("delta"), dict):
            return event
        data["delta"]["text"] = text
        return b"event: content_block_delta\ndata: " + orjson.dumps(data) + b"\n\n"

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]:
        out = []
        if message:  # a block of its own for the message; the caller's SDK closes any block left open
            index = 1_000  # past any block the stream opened
            start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": message}}
            out += [_sse("content_block_start", start), _sse("content_block_delta", delta)]
            out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        stop = {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None}}
        stop["usage"] = {"output_tokens": 0}
        return [*out, _sse("message_delta", stop), _sse("message_stop", {"type": "message_stop"})]

    def stream(self) -> StreamView:
        return PlainStream(self)


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


VIEWS: dict[str, AnswerView] = {OPENAI: OpenAIView(), ANTHROPIC: AnthropicView(), RESPONSES: ResponsesView()}


def view_for(dialect: str) -> AnswerView | None:
    return VIEWS.get(dialect)


def _set_choice_text(choice: dict[str, Any], text: str) -> None:
    message = choice.get("message")
    if isinstance(message, dict):
        message["content"] = text
    elif "text" in choice:
        choice["text"] = text
    else:
        choice["message"] = {"role": "assistant", "content": text}


def _set_delta_text(choice: dict[str, Any], text: str) -> None:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        delta["content"] = text
    else:
        choice["text"] = text
