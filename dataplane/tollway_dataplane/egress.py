"""The caller's protocol, when it is not OpenAI: turns the OpenAI-shaped answer into what the caller speaks.

Translators always produce OpenAI shapes; an egress (e.g. the Anthropic-compatible `/v1/messages` entry)
converts whole bodies, stream events and errors for its callers.
"""

from __future__ import annotations

from typing import Protocol


class EgressStream(Protocol):
    def feed(self, events: list[bytes]) -> list[bytes]:
        """OpenAI SSE events (b"data: {...}\\n\\n") in, the caller's SSE events out."""
        ...

    def finish(self) -> list[bytes]:
        """Events owed when the upstream stream ended."""
        ...


class Egress(Protocol):
    def body(self, openai_body: bytes) -> bytes:
        """A whole OpenAI chat.completion body, as the caller's JSON."""
        ...

    def stream(self, model: str) -> EgressStream: ...

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes: ...

    def stream_error_event(self, message: str, code: str | None) -> bytes: ...
