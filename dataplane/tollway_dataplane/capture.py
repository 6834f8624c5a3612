"""Prompt and completion text for the access log, only when enabled: redacted, then truncated.

The completion is read by `CaptureFilter`, a response filter placed after the stages' filters and before the
caller's protocol, so it records what the caller was sent (masked text stays masked), in OpenAI shape.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .sse import event_data
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


def completion_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices:
        return ""
    first = choices[0]
    return _text((first.get("message") or {}).get("content")) or str(first.get("text") or "")


class StreamCapture:
    """Collects streamed text from OpenAI chunks (decoding each event: only done when capture is on)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def feed(self, events: list[bytes]) -> None:
        for event in events:
            payload = event_data(event)
            if not payload.startswith(b"{"):
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            for choice in data.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content") or choice.get("text")
                if isinstance(piece, str):
                    self.parts.append(piece)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class CaptureFilter(PassFilter):
    """Records the answer's text as it passes; changes nothing."""

    def __init__(self) -> None:
        self._stream = StreamCapture()
        self._body: str | None = None

    async def body(self, body: bytes) -> bytes:
        self._body = completion_text(body)
        return body

    async def feed(self, events: list[bytes]) -> list[bytes]:
        self._stream.feed(events)
        return events

    @property
    def text(self) -> str:
        return self._body if self._body is not None else self._stream.text
