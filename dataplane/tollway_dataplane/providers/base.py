"""The translator interface: one implementation per upstream wire protocol.

The gateway speaks OpenAI to its callers. A translator turns one attempt of an OpenAI-shaped call into the
provider's request, and the provider's answer (whole or streamed) back into OpenAI shape plus usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..pools import PoolKeyRuntime, PoolRuntime
from ..usage import Usage

if TYPE_CHECKING:
    from ..egress import Egress

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"


@dataclass(slots=True)
class Call:
    """One client request, parsed once; attempts read it, never change it."""

    endpoint: str  # CHAT | COMPLETIONS | EMBEDDINGS
    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage was set by the caller
    egress: Egress | None = None  # the caller's protocol when it is not OpenAI


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class ProviderError:
    """A provider's failure, mapped to what the caller will see if no other attempt succeeds."""

    status: int
    message: str
    type: str = "upstream_error"
    code: str | None = None


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
        """Events still owed at the end of the upstream stream (a terminal [DONE], say)."""
        ...


class Translator(Protocol):
    def build_request(
        self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str
    ) -> UpstreamRequest: ...

    def translate_response(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        """A successful non-streamed answer, as OpenAI JSON bytes, and its reported usage."""
        ...

    def translate_error(self, status: int, body: bytes) -> ProviderError: ...

    def stream(self, call: Call) -> StreamTranslator: ...
