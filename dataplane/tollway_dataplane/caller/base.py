"""What a caller's protocol is, for the request path: an entry adapter and an answer adapter in one object.

Translators always produce OpenAI shapes and the canonical call is OpenAI chat, so a protocol other than OpenAI
(the Anthropic-compatible `/messages` entry; the Responses API next) converts the caller's request into a chat
body and converts answers back: whole bodies, stream events (as the last response filter of the chain) and errors.
OpenAI callers need no adapter at all, which keeps their path free of this work.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..stages.base import PassFilter


class AnswerStream(Protocol):
    """One stream's conversion; it keeps state across batches (open content blocks, ...)."""

    def feed(self, events: list[bytes]) -> list[bytes]:
        """OpenAI SSE events (b"data: {...}\\n\\n") in, the caller's SSE events out."""
        ...

    def finish(self) -> list[bytes]:
        """Events owed when the upstream stream ended."""
        ...


class CallerProtocol(Protocol):
    name: str  # as the access log names it: "anthropic", ...

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """The caller's request body as an OpenAI chat body; raises GatewayError(400) naming what cannot be read."""
        ...

    def body(self, openai_body: bytes) -> bytes:
        """A whole OpenAI chat.completion body, as the caller's JSON."""
        ...

    def stream(self, model: str) -> AnswerStream: ...

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes: ...

    def stream_error_event(self, message: str, code: str | None) -> bytes: ...


class ProtocolFilter(PassFilter):
    """A caller's protocol as the last response filter of the chain."""

    __slots__ = ("_model", "_protocol", "_stream")

    def __init__(self, protocol: CallerProtocol, model: str):
        self._protocol = protocol
        self._model = model
        self._stream: AnswerStream | None = None

    async def body(self, body: bytes) -> bytes:
        return self._protocol.body(body)

    async def feed(self, events: list[bytes]) -> list[bytes]:
        if self._stream is None:
            self._stream = self._protocol.stream(self._model)
        return self._stream.feed(events) if events else events

    async def finish(self) -> list[bytes]:
        return self._stream.finish() if self._stream is not None else []
