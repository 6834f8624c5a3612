"""The stage interface: what runs between routing and the upstream, and what looks at the answer on its way back.

A request passes the stages of its rule in the gateway's fixed order (guardrails, prompt decorator, cache, web
search). Each stage's request hook returns a `Step`: go on (perhaps with a rewritten call), or answer now with a
`Reply` (a cache hit, a block). A stage that wants to see the answer hands back a `ResponseFilter` for this
request; filters run in reverse order on the way out, so a reply made by stage k passes through the filters of
the stages before k only: a cache hit is still checked by the response guardrail, and a blocked answer never
reaches the cache.

Filters work on what the caller would otherwise receive: a whole body, or batches of SSE events, in OpenAI chat
shape unless the answer is a native pass-through (`Answer.dialect`, told to each filter by `start`). `feed` may
hold events back (a guardrail window) or rewrite them, and `finish` releases what is owed at the end. A filter
that must end a stream early (a block) raises `EndStream` with the events to send last; the relay stops reading
the upstream. `close` comes last, and says whether the caller got the whole answer: what a filter stores (the
cache) it stores then, so an answer a later filter blocked is never kept.
The caller's protocol and prompt capture are filters of the same chain, so the relay makes one chain call per
batch however many features a route has.

Shaped this way so a capability is one module: a stage never edits the gateway front or the relay loop, and a
rule without stages has no pipeline at all (no per-request allocation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..answer import Answer
from ..call import Call
from ..pools import PoolRuntime

if TYPE_CHECKING:
    import aiohttp

    from .cache.store import CacheStore


@dataclass(slots=True)
class Exchange:
    """What stages may know about one request, and where they leave what the access log should say."""

    request_id: str
    consumer: str  # "namespace/name"
    route: str
    requested_model: str
    headers: Mapping[str, str]  # the caller's request headers
    protocol: str = ""  # the caller's protocol when it is not OpenAI ("anthropic", ...)
    notes: dict[str, Any] = field(default_factory=dict)  # access-log fields by stage ("cache", "guardrail", ...)
    response_headers: dict[str, str] = field(default_factory=dict)  # added to the caller's answer
    answer_altered: bool = False  # a filter changed or cut the answer's content (a mask, a block): never cached


class ResponseFilter(Protocol):
    """Looks at one request's answer. Created per request by a stage's request hook."""

    def start(self, answer: Answer) -> None:
        """Called once before `body` or `feed`: which answer this is (stream or not, the model and pool that
        served, its dialect: OpenAI chat unless a native pass-through keeps the provider's shape)."""
        ...

    async def body(self, body: bytes) -> bytes:
        """A whole OpenAI answer in, the answer to send on out (or raise GatewayError)."""
        ...

    async def feed(self, events: list[bytes]) -> list[bytes]:
        """A batch of OpenAI SSE events in, the events to send on now out (may be fewer, more, or rewritten)."""
        ...

    async def finish(self) -> list[bytes]:
        """The upstream stream ended cleanly: events still owed."""
        ...

    def close(self, complete: bool) -> None:
        """Called once, last: `complete` when the caller received the whole answer this filter saw (store it,
        count it); False when it will not (upstream cut, caller gone, an error, a later filter blocked it)."""
        ...


class PassFilter:
    """A filter that changes nothing; subclasses override what they need."""

    __slots__ = ()

    def start(self, answer: Answer) -> None:
        return None

    async def body(self, body: bytes) -> bytes:
        return body

    async def feed(self, events: list[bytes]) -> list[bytes]:
        return events

    async def finish(self) -> list[bytes]:
        return []

    def close(self, complete: bool) -> None:
        return None


class EndStream(Exception):
    """Raised by a filter's `feed`: send these events (through the filters after it) and end the stream."""

    def __init__(self, events: list[bytes]):
        super().__init__("stream ended by a response filter")
        self.events = events


@dataclass(frozen=True, slots=True)
class Step:
    """A request hook's verdict. Neither field set: go on with the call unchanged."""

    call: Call | None = None  # go on with this call instead
    reply: Answer | None = None  # answer now; the upstream is not called
    filter: ResponseFilter | None = None  # see the answer on its way back


CONTINUE = Step()


class ModelCaller(Protocol):
    async def call(self, pool: str, call: Call, *, request_id: str = "") -> Answer:
        """The pool's answer to `call` (UpstreamError when every attempt failed)."""
        ...


class HttpClient(Protocol):
    """Where the process's HTTP session is. The gateway makes the session when it starts, after the first
    snapshot (and its stages) were built, so stages read `session` per call, never when they are built."""

    @property
    def session(self) -> aiohttp.ClientSession: ...


@dataclass(frozen=True, slots=True)
class StageServices:
    """What a stage may use when it is built. A stage that calls a model (an embedding, a judge) goes through a
    pool with `models`, so it gets keys, timeouts and cooldowns like any request; `cache_store` is the process's
    response store (Redis when the gateway has one), shared by every snapshot so entries survive reloads.
    A stage that calls another service (a search engine) uses `http`, and reads the credentials its config
    names by id from `secrets` (the secrets document, where pool keys come from too)."""

    pools: Mapping[str, PoolRuntime] = field(default_factory=dict)
    models: ModelCaller | None = None
    cache_store: CacheStore | None = None
    http: HttpClient | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)


class Stage(Protocol):
    name: str

    async def on_request(self, call: Call, exchange: Exchange) -> Step: ...
