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

Most filters never wait while they look at a batch (a rules window, recording for the cache, converting to the
caller's protocol), so each also has `feed_now`, the same step without a coroutine: the relay runs the chain
from the upstream connection's callback and writes the result at once, with no task switch per batch. A filter
that may wait (a remote checker, a store) answers None from `feed_now`, having changed nothing, and the relay
awaits its `feed` for that batch. A `PassFilter` subclass that overrides `feed` alone is taken to wait.

Shaped this way so a capability is one module: a stage never edits the gateway front or the relay loop, and a
rule without stages has no pipeline at all (no per-request allocation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

    def feed_now(self, events: list[bytes]) -> list[bytes] | None:
        """`feed` without waiting: its result (or EndStream), or None, having changed nothing, when only `feed`
        can take this batch."""
        ...

    async def finish(self) -> list[bytes]:
        """The upstream stream ended cleanly: events still owed."""
        ...

    def close(self, complete: bool) -> None:
        """Called once, last: `complete` when the caller received the whole answer this filter saw (store it,
        count it); False when it will not (upstream cut, caller gone, an error, a later filter blocked it)."""
        ...


class PassFilter:
    """A filter that changes nothing; subclasses override what they need: `feed_now` for a filter that never
    waits on a batch (its `feed` follows), `feed` for one that may (then `feed_now` says so, unless overridden)."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "feed" in cls.__dict__ and "feed_now" not in cls.__dict__:
            cls.feed_now = PassFilter._waits  # type: ignore[method-assign]

    def start(self, answer: Answer) -> None:
        return None

    async def body(self, body: bytes) -> bytes:
        return body

    def feed_now(self, events: list[bytes]) -> list[bytes] | None:
        return events

    async def feed(self, events: list[bytes]) -> list[bytes]:
        out = self.feed_now(events)
        assert out is not None, "a filter whose feed_now may answer None overrides feed"
        return out

    def _waits(self, events: list[bytes]) -> list[bytes] | None:
        return None

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


def _no_session() -> aiohttp.ClientSession:
    raise RuntimeError("the gateway's HTTP client is not running")


@dataclass(frozen=True, slots=True)
class StageServices:
    """What a stage may use when it is built: the snapshot's pools; `models`, through which a stage that calls a
    model (an embedding, a judge, a query rewrite) goes to a pool, so it gets keys, timeouts, cooldowns and retries
    like any request; the values of the credentials its settings name by id (from the secrets document); the
    process's HTTP client, for calls that are not model calls (a moderation service, a webhook, a search engine);
    and `cache_store`, the process's response store, shared by every snapshot so entries survive reloads.

    The client is reached through a function, called per request: it is created when the gateway starts, after
    the first snapshot (and so the first stages) were built."""

    pools: Mapping[str, PoolRuntime] = field(default_factory=dict)
    models: ModelCaller | None = None
    secrets: Mapping[str, str] = field(default_factory=dict)  # credential values by id; never log them
    http: Callable[[], aiohttp.ClientSession] = _no_session
    cache_store: CacheStore | None = None


class Stage(Protocol):
    name: str

    async def on_request(self, call: Call, exchange: Exchange) -> Step: ...
