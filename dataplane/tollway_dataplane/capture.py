"""Prompt and completion text for the access log, only when enabled: redacted, then truncated.

The completion is read by `CaptureFilter`, a response filter placed after the stages' filters and before the
caller's protocol, so it records what the caller was sent (masked text stays masked). Answers reach it in their
dialect: OpenAI chat, or a native pass-through's own shape (an Anthropic pool answering `/v1/messages`, an
OpenAI pool answering `/v1/responses`); it reads each through the dialect's `TextReader`, the one the guardrails
read with, so the log says what the checkers saw.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .answer import Answer
from .dialects import TextReader, reader_for
from .stages.base import PassFilter

# Things that look like credentials never reach a log, even when a user pastes them into a prompt.
_SECRET = re.compile(
    r"(sk-[A-Za-z0-9_-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)


def redact(text: str, limit: int) -> str:
    text = _SECRET.sub("[REDACTED]", text)
    return text if len(text) <= limit else text[:limit] + f"...[{len(text) - limit} more chars]"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        return "\n".join(f"{m.get('role', '?')}: {_text(m.get('content'))}" for m in messages if isinstance(m, dict))
    prompt = body.get("prompt", body.get("input", ""))
    return prompt if isinstance(prompt, str) else orjson.dumps(prompt).decode()


class CaptureFilter(PassFilter):
    """Records the answer's text as it passes; changes nothing."""

    __slots__ = ("_body", "_parts", "_reader")

    def __init__(self) -> None:
        self._reader: TextReader | None = None  # None: a dialect nobody reads, captured as no text
        self._parts: list[str] = []
        self._body: str | None = None

    def start(self, answer: Answer) -> None:
        self._reader = reader_for(answer.dialect)

    async def body(self, body: bytes) -> bytes:
        texts = self._reader.body_texts(body) if self._reader is not None else None
        self._body = "\n".join(t for t in texts if t) if texts else ""
        return body

    def feed_now(self, events: list[bytes]) -> list[bytes]:
        reader = self._reader
        if reader is not None:
            for event in events:
                piece = reader.event_text(event)
                if piece:
                    self._parts.append(piece)
        return events

    @property
    def text(self) -> str:
        return self._body if self._body is not None else "".join(self._parts)
