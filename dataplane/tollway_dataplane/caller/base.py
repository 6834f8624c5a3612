"""What a caller's protocol is, for the request path: an entry adapter and an answer adapter in one object.

Translators produce OpenAI shapes and the canonical call is OpenAI chat, so a protocol other than OpenAI (the
Anthropic-compatible `/messages` entry, the Responses API's `/responses`) takes the caller's request in as a chat
body (`intake`), and turns answers back into what its callers speak: whole bodies and stream events through its
answer filter (the last response filter of the chain), errors through `error_body` / `stream_error_event`.
OpenAI callers need no adapter at all, which keeps their path free of this work.

`intake` may also keep the caller's own body on the call (`Intake.native`), so a pool that speaks the protocol
natively gets exactly what the caller sent; such an answer travels in the caller's dialect and the answer filter
leaves it as it is. `Intake.answers` writes the request's answers: the protocol itself for stateless ones, an
object bound to this one request where answers echo the request (the Responses API).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..answer import Answer
from ..call import NativeBody
from ..stages.base import PassFilter, ResponseFilter

if TYPE_CHECKING:
    from .responses_store import ResponseStore


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class CallerContext:
    """What a protocol may use while it takes a request in."""

    consumer: str  # "namespace/name"
    responses: ResponseStore  # kept responses (the Responses API's conversations)
    headers: Mapping[str, str] = field(default_factory=dict)  # the caller's request headers


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class Intake:
    """A caller's request as the gateway takes it in."""

    chat: dict[str, Any]  # the canonical chat body
    native: NativeBody | None  # the caller's own body, for pools that speak the protocol natively
    answers: AnswerProtocol  # writes this request's answers (bound to it when answers echo the request)
    notes: dict[str, Any] | None = None  # what the access log should say about the conversion


class AnswerStream(Protocol):
    """One stream's conversion; it keeps state across batches (open content blocks, ...)."""

    def feed(self, events: list[bytes]) -> list[bytes]:
        """OpenAI SSE events (b"data: {...}\\n\\n") in, the caller's SSE events out."""
        ...

    def finish(self) -> list[bytes]:
        """Events owed when the upstream stream ended."""
        ...


class ErrorShape(Protocol):
    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes:
        """An error answer (4xx, 5xx) as the caller's JSON."""
        ...


class AnswerProtocol(ErrorShape, Protocol):
    """The way out: answers and errors in the caller's shapes."""

    def answer_filter(self, answer: Answer) -> ResponseFilter:
        """The last response filter of the chain: the answer in the caller's shapes."""
        ...

    def stream_error_event(self, message: str, code: str | None) -> bytes:
        """The event that ends a stream which broke after its first event."""
        ...


class CallerProtocol(ErrorShape, Protocol):
    """The way in (an entry of the gateway front); errors until the request is taken in are its own."""

    name: str  # as the access log names it, and the dialect of answers already in the caller's shape

    async def intake(self, body: dict[str, Any], caller: CallerContext) -> Intake:
        """The caller's request taken in; raises GatewayError(400) naming what cannot be read."""
        ...


class ConvertingProtocol:
    """A stateless protocol: `to_chat` on the way in, `body` / `stream` for OpenAI answers on the way out."""

    name = ""

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def native(self, body: dict[str, Any], caller: CallerContext) -> NativeBody | None:
        """The caller's body for pools that speak this protocol natively; None: every pool gets the chat body."""
        return None

    async def intake(self, body: dict[str, Any], caller: CallerContext) -> Intake:
        return Intake(self.to_chat(body), self.native(body, caller), self)

    def answer_filter(self, answer: Answer) -> ResponseFilter:
        return ProtocolFilter(self, answer.model)

    def body(self, openai_body: bytes) -> bytes:
        """A whole OpenAI chat.completion body, as the caller's JSON."""
        raise NotImplementedError

    def stream(self, model: str) -> AnswerStream:
        raise NotImplementedError

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes:
        raise NotImplementedError

    def stream_error_event(self, message: str, code: str | None) -> bytes:
        raise NotImplementedError


class ProtocolFilter(PassFilter):
    """A converting protocol as the last response filter of the chain. An answer already in the caller's dialect
    (a native pass-through) goes through unchanged."""

    __slots__ = ("_model", "_native", "_protocol", "_stream")

    def __init__(self, protocol: ConvertingProtocol, model: str):
        self._protocol = protocol
        self._model = model
        self._stream: AnswerStream | None = None
        self._native = False

    def start(self, answer: Answer) -> None:
        self._native = answer.dialect == self._protocol.name

    async def body(self, body: bytes) -> bytes:
        return body if self._native else self._protocol.body(body)

    def feed_now(self, events: list[bytes]) -> list[bytes]:
        if self._native or not events:
            return events
        if self._stream is None:
            self._stream = self._protocol.stream(self._model)
        return self._stream.feed(events)

    async def finish(self) -> list[bytes]:
        return self._stream.finish() if self._stream is not None else []
