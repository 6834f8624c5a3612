"""Where each answer dialect keeps its text: the reading half of every response filter that looks at an answer.

Response filters get answers in their dialect (`Answer.dialect`): OpenAI chat (and legacy completions) for every
translated answer; the provider's own shape for a native pass-through (an Anthropic Messages answer to a
`/messages` request, a Responses object or event stream to a `/responses` request). The guardrails, which also
rewrite and end answers (stages/guardrails/view.py), and prompt capture (capture.py) both read through the
`TextReader` of the dialect, so a dialect is taught once and the two cannot disagree on what an answer said.

Reading is cheap on purpose: an event that cannot carry text is recognised from its bytes, never decoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from .answer import OPENAI, RESPONSES
from .providers.anthropic import ANTHROPIC
from .sse import event_data

CONTENT_FILTER = "content_filter"  # OpenAI's finish reason, and the Responses API's reason, for a filtered answer


class TextReader(Protocol):
    dialect: str

    def body_texts(self, body: bytes) -> list[str] | None:
        """The answer texts of a whole body (one per choice, or per text part), None: not an answer it can read."""
        ...

    def event_text(self, event: bytes) -> str | None:
        """The answer text an SSE event adds (None: it adds none: a role, a finish, usage, the end)."""
        ...

    def ends_answer(self, event: bytes) -> bool:
        """The event finishes the answer (no text follows it)."""
        ...


class OpenAIText:
    """chat.completion / chat.completion.chunk, and text_completion (legacy completions), choice by choice."""

    dialect = OPENAI

    def body_texts(self, body: bytes) -> list[str] | None:
        data = loads_object(body)
        choices = data.get("choices") if data is not None else None
        if not isinstance(choices, list):
            return None
        return [choice_text(c) for c in choices]

    def event_text(self, event: bytes) -> str | None:
        if b'"content"' not in event and b'"text"' not in event:
            return None  # the common text-less events (usage, finish, [DONE]) without decoding
        data = event_json(event)
        if data is None:
            return None
        texts = [delta_text(c) for c in data.get("choices") or () if isinstance(c, dict)]
        text = "".join(t for t in texts if t)
        return text or None

    def ends_answer(self, event: bytes) -> bool:
        if b"[DONE]" in event and event_data(event) == b"[DONE]":
            return True
        if b'"finish_reason":null' in event or b'"finish_reason"' not in event:
            return False
        data = event_json(event)
        return data is not None and any(
            isinstance(c, dict) and c.get("finish_reason") for c in data.get("choices") or ()
        )


class AnthropicText:
    """A native Messages answer: the text blocks of the message, the `text_delta`s of its stream."""

    dialect = ANTHROPIC

    def body_texts(self, body: bytes) -> list[str] | None:
        data = loads_object(body)
        content = data.get("content") if data is not None else None
        if not isinstance(content, list):
            return None
        return ["".join(b["text"] for b in content if is_text_block(b))]

    def event_text(self, event: bytes) -> str | None:
        if b'"text_delta"' not in event:
            return None
        delta = (event_json(event) or {}).get("delta")
        return delta.get("text") or None if isinstance(delta, dict) and isinstance(delta.get("text"), str) else None

    def ends_answer(self, event: bytes) -> bool:
        return event.startswith((b"event: message_delta", b"event: message_stop"))


# The events that end a Responses stream: the three terminal responses, and the provider's error.
RESPONSE_ENDINGS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
_RESPONSE_ENDING_MARKERS = (b"response.completed", b"response.incomplete", b"response.failed", b'"type":"error"')


class ResponsesText:
    """A native Responses answer: the `output_text` parts of a response's messages, one text each, and the
    `response.output_text.delta` events of its stream."""

    dialect = RESPONSES

    def body_texts(self, body: bytes) -> list[str] | None:
        data = loads_object(body)
        if data is None or not isinstance(data.get("output"), list):
            return None
        return [part["text"] for part in output_text_parts(data["output"])]

    def event_text(self, event: bytes) -> str | None:
        if b"output_text.delta" not in event:
            return None
        data = event_json(event)
        if data is None or data.get("type") != "response.output_text.delta":
            return None
        delta = data.get("delta")
        return delta or None if isinstance(delta, str) else None

    def ends_answer(self, event: bytes) -> bool:
        if not any(marker in event for marker in _RESPONSE_ENDING_MARKERS):
            return False
        data = event_json(event)  # the marker may be inside some text
        return data is not None and data.get("type") in RESPONSE_ENDINGS


READERS: dict[str, TextReader] = {OPENAI: OpenAIText(), ANTHROPIC: AnthropicText(), RESPONSES: ResponsesText()}


def reader_for(dialect: str) -> TextReader | None:
    return READERS.get(dialect)


# -- the shapes, for the filters that also rewrite them ------------------------------------------------------------


def loads_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def event_json(event: bytes) -> dict[str, Any] | None:
    payload = event_data(event)
    return loads_object(payload) if payload.startswith(b"{") else None


def text_of(content: Any) -> str:
    """An OpenAI message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    message = choice.get("message")
    if isinstance(message, dict):
        return text_of(message.get("content"))
    return choice["text"] if isinstance(choice.get("text"), str) else ""


def delta_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        content = delta.get("content")
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def is_text_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)


def output_text_parts(output: list[Any]) -> Iterator[dict[str, Any]]:
    """The `output_text` parts of a response's message items, in order."""
    for item in output:
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list):
            for part in item["content"]:
                if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    yield part
