"""The translator interface: one implementation per upstream wire protocol.

The gateway speaks OpenAI to its callers. A translator turns one attempt of an OpenAI-shaped call into the
provider's request, and the provider's answer (whole or streamed) back into OpenAI shape plus usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..answer import OPENAI
from ..call import Call
from ..pools import PoolKeyRuntime, PoolRuntime
from ..usage import Usage


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    dialect: str = OPENAI  # the shape of the answer: OpenAI chat, or the caller's own on a native pass-through


@dataclass(slots=True)
class ProviderError:
    """A provider's failure, mapped to what the caller will see if no other attempt succeeds."""

    status: int
    message: str
    type: str = "upstream_error"
    code: str | None = None


class InvalidResponse(Exception):
    """A provider answered 200 with a body that is not the JSON object its protocol promises (truncated, HTML,
    ...): an upstream failure like a 5xx, never something to hand the caller as a success."""


def answer_object(body: bytes) -> dict[str, Any]:
    """A successful answer's JSON object, or InvalidResponse."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidResponse("the upstream answered 200 with a body that is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidResponse("the upstream answered 200 with JSON that is not an object")
    return data


class StreamFailed(Exception):
    """A translator saw the provider report an error before the stream's first event: the attempt failed and,
    since nothing reached the caller yet, the gateway may still try another key or backend."""

    def __init__(self, status: int, message: str, type: str = "upstream_error"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type


@dataclass(slots=True)
class StreamState:
    usage: Usage | None = None
    content_events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class StreamTranslator(Protocol):
    state: StreamState

    def feed(self, data: bytes) -> list[bytes]:
        """Upstream bytes in, complete OpenAI SSE events (b"data: ...\\n\\n") out."""
        ...

    def finish(self) -> list[bytes]:
        """Events still owed at the end of the upstream stream (a terminal [DONE], say); StreamInterrupted when
        the stream ended before the answer was complete and the translator has no error event of its own."""
        ...


class Translator(Protocol):
    def build_request(
        self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str
    ) -> UpstreamRequest: ...

    def translate_response(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        """A successful non-streamed answer, as OpenAI JSON bytes, and its reported usage (InvalidResponse when
        the body is not a JSON object)."""
        ...

    def translate_error(self, status: int, body: bytes) -> ProviderError: ...

    def stream(self, call: Call) -> StreamTranslator: ...
