"""The response cache as a stage: look up before the upstream, store what came back complete.

Request side, in order: the caller's `Cache-Control` (`no-store`: neither look up nor store; `no-cache`: store
but do not look up; `max-age=N`: only entries younger than N seconds), the exact key, then (semantic mode) the
most similar last user turn inside the partition, then single flight. A hit is a stage reply: it still passes
the response filters of the stages before the cache (the response guardrail), its usage reports the original
tokens, and it is not charged against token limits (a request limit still counts it). A miss leaves a filter
that keeps the answer if it completes: finish reason `stop` on every choice (`tool_calls` with
`cacheToolCalls`), no later filter changed or blocked it, at most `maxEntryBytes`.

Shadow mode never serves a semantic hit: it counts the would-be hit and, once the real answer is there, compares
the two (the same text, or answers whose embeddings are at least as similar as the threshold), so a team sees
the false-hit rate before it turns semantic matching on. Every answer on a cached route says what happened in
`x-tollway-cache` (`hit`, `semantic-hit`, `miss`, `bypass`) and, for a semantic hit, the similarity.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from tollway_contract.model import Cache, Rule

from ... import metrics
from ...answer import OPENAI, Answer, EventSource
from ...call import CHAT, EMBEDDINGS, Call
from ...pricing import cost_usd
from ...timeouts import effective
from ...usage import Usage
from ..base import CONTINUE, Exchange, ModelCaller, PassFilter, StageServices, Step
from . import keys
from .entry import Entry, answer_text, finish_reasons, is_usage_only
from .flight import Flight, Flights, FlightSource
from .store import CacheStore, StoreUnavailable

log = logging.getLogger("tollway.cache")

HEADER = "x-tollway-cache"
SIMILARITY_HEADER = "x-tollway-cache-similarity"


class CacheControl:
    """The caller's Cache-Control request header, as far as the cache obeys it."""

    __slots__ = ("lookup", "max_age", "store")

    def __init__(self, header: str | None):
        self.lookup = self.store = True
        self.max_age: float | None = None
        for directive in (header or "").lower().split(","):
            name, _, value = directive.strip().partition("=")
            if name == "no-store":
                self.lookup = self.store = False
            elif name == "no-cache":
                self.lookup = False
            elif name == "max-age" and value.strip().isdigit():
                self.max_age = float(value.strip())


class ReplaySource:
    """A stored stream, replayed event by event (an `EventSource`)."""

    def __init__(self, events: list[bytes], usage: Usage):
        self.first = events[:1]
        self._rest: list[bytes] | None = events[1:]
        self._usage = usage

    async def next(self) -> list[bytes] | None:
        rest, self._rest = self._rest, None
        return rest

    def tail(self) -> list[bytes]:
        return []

    def usage(self) -> Usage:
        return self._usage

    def close(self) -> None:
        return None


class CacheStage:
    name = "cache"

    def __init__(self, config: Cache, rule: Rule, store: CacheStore, models: ModelCaller | None, wait: float):
        self.config = config
        self._rule_id = ",".join(rule.models)
        self._store = store
        self._models = models
        self._wait = wait  # how long a waiter waits for its leader's answer to start: the first-byte timeout
        self._flights = Flights()

    async def on_request(self, call: Call, exchange: Exchange) -> Step:
        if call.endpoint != CHAT:
            return CONTINUE
        config = self.config
        control = CacheControl(exchange.headers.get("cache-control"))
        if config.prompt_cache_key and "prompt_cache_key" not in call.body:
            call = call.with_hints(prompt_cache_key=keys.prompt_cache_key(exchange.consumer, call.body))
        if not control.store:
            return self._result(exchange, "bypass", Step(call=call))
        scope = exchange.consumer if config.scope == "consumer" else "*"
        partition = keys.partition(
            scope=scope, route=exchange.route, rule=self._rule_id, protocol=exchange.protocol, body=call.body
        )
        key = keys.exact_key(partition, call.body)
        lookup = Lookup(partition, key)
        started = time.perf_counter()
        if control.lookup:
            reply = await self._lookup(call, exchange, lookup, control)
            seconds = time.perf_counter() - started
            metrics.child(metrics.CACHE_LOOKUP_SECONDS, exchange.route, config.mode).observe(seconds)
            if reply is not None:
                return Step(reply=reply)
            if config.coalesce:
                flight = self._flights.get(key)
                if flight is not None:
                    reply = await self._join(flight, call, exchange)
                    if reply is not None:
                        return Step(reply=reply)
        flight = self._flights.lead(key) if config.coalesce and self._flights.get(key) is None else None
        result = "miss" if control.lookup else "bypass"
        cache_filter = CacheFilter(self, call, exchange, lookup, flight)
        return self._result(exchange, result, Step(call=call, filter=cache_filter))

    # -- lookups ---------------------------------------------------------------------------------------------

    async def _lookup(self, call: Call, exchange: Exchange, lookup: Lookup, control: CacheControl) -> Answer | None:
        try:
            entry = await self._get(lookup.key, control.max_age)
            if entry is not None and entry.serves(call.stream):
                return self._hit(entry, call, exchange, "hit")
            semantic = self.config.semantic
            text = keys.last_user_text(call.body)
            if semantic is None or text is None or self._models is None:
                return None
            lookup.vector = await self._embed(text, exchange)
            if lookup.vector is None:
                return None
            near = await self._store.nearest(lookup.partition, lookup.vector)
            if near is None or near.similarity < semantic.threshold or near.key == lookup.key:
                return None
            entry = await self._get(near.key, control.max_age)
            if entry is None or not entry.serves(call.stream):
                return None
            if semantic.shadow:
                lookup.shadow = entry
                metrics.CACHE_SHADOW.labels(exchange.route, "would_hit").inc()
                return None
            exchange.response_headers[SIMILARITY_HEADER] = f"{near.similarity:.4f}"
            return self._hit(entry, call, exchange, "semantic-hit")
        except StoreUnavailable:
            metrics.CACHE_LOOKUPS.labels(exchange.route, "error").inc()
            return None

    async def _get(self, key: str, max_age: float | None) -> Entry | None:
        raw = await self._store.get(key)
        entry = Entry.loads(raw) if raw is not None else None
        if entry is None or (max_age is not None and entry.age > max_age):
            return None
        return entry

    async def embed(self, texts: Sequence[str], exchange: Exchange | None = None) -> list[list[float]] | None:
        """Embeddings through the configured pool; None when the pool failed (the cache then only matches exactly)."""
        semantic = self.config.semantic
        assert semantic is not None and self._models is not None
        body: dict[str, Any] = {"model": semantic.model, "input": list(texts)}
        if semantic.dimensions:
            body["dimensions"] = semantic.dimensions
        call = Call(EMBEDDINGS, body, orjson.dumps(body), semantic.model, False, False)
        try:
            answer = await self._models.call(
                semantic.pool, call, request_id=exchange.request_id if exchange is not None else ""
            )
            data = orjson.loads(answer.body or b"{}")
            vectors = [item["embedding"] for item in sorted(data["data"], key=lambda d: d.get("index", 0))]
        except Exception as exc:  # any failure of a side call: log it, match exactly only
            log.warning("embedding for the cache failed", extra={"pool": semantic.pool, "error": str(exc)[:200]})
            return None
        if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
            return None
        return vectors

    async def _embed(self, text: str, exchange: Exchange) -> list[float] | None:
        vectors = await self.embed([text], exchange)
        return vectors[0] if vectors else None

    def _hit(self, entry: Entry, call: Call, exchange: Exchange, result: str) -> Answer:
        route = exchange.route
        metrics.CACHE_SAVED_TOKENS.labels(route, "input").inc(entry.usage.input_tokens)
        metrics.CACHE_SAVED_TOKENS.labels(route, "output").inc(entry.usage.output_tokens)
        if entry.cost:
            metrics.CACHE_SAVED_COST.labels(route).inc(entry.cost)
        self._result(exchange, result, None)
        exchange.notes["cache"]["age_s"] = round(entry.age, 3)
        return _answer(entry, call)

    async def _join(self, flight: Flight, call: Call, exchange: Exchange) -> Answer | None:
        """Wait on an identical request in flight; None when it failed before its answer started."""
        if not await flight.wait_for_answer(self._wait):
            return None
        if call.stream and flight.stream and flight.dialect == OPENAI:
            answer = Answer(stream=FlightSource(flight, call.client_wants_usage), model=flight.model)
        else:
            if not await flight.wait_done() or not flight.entry().serves(call.stream):
                return None
            answer = _answer(flight.entry(), call)
        metrics.COALESCED.labels(exchange.route).inc()
        self._result(exchange, "hit", None)
        exchange.notes["cache"]["coalesced"] = True
        answer.dialect = flight.dialect
        return answer

    def _result(self, exchange: Exchange, result: str, step: Step | None) -> Step:
        exchange.response_headers[HEADER] = result
        exchange.notes["cache"] = {"result": result, "mode": self.config.mode}
        metrics.child(metrics.CACHE_LOOKUPS, exchange.route, result.replace("-", "_")).inc()
        return step or CONTINUE

    # -- storing ---------------------------------------------------------------------------------------------

    async def store(self, lookup: Lookup, entry: Entry, route: str) -> None:
        config = self.config
        raw = entry.dumps()
        if len(raw) > config.max_entry_bytes:
            metrics.CACHE_STORES.labels(route, "too_large").inc()
            return
        try:
            await self._store.put(lookup.key, raw, config.ttl)
            if config.semantic is not None:
                vector = lookup.vector
                if vector is None and lookup.text is not None:
                    vectors = await self.embed([lookup.text])
                    vector = vectors[0] if vectors else None
                if vector is not None:
                    await self._store.add_vector(lookup.partition, lookup.key, vector, config.ttl)
        except StoreUnavailable:
            metrics.CACHE_STORES.labels(route, "error").inc()
            return
        metrics.child(metrics.CACHE_STORES, route, "stored").inc()

    async def compare(self, shadow: Entry, real_text: str, route: str) -> None:
        """Shadow mode: would the semantic hit have been right?"""
        semantic = self.config.semantic
        assert semantic is not None
        if shadow.text == real_text:
            agree = True
        else:
            vectors = await self.embed([shadow.text, real_text])
            if vectors is None:
                return
            a, b = vectors
            agree = _cosine(a, b) >= semantic.threshold
        metrics.CACHE_SHADOW.labels(route, "agree" if agree else "disagree").inc()


class Lookup:
    """What one request's lookup computed, for storing its answer later."""

    __slots__ = ("key", "partition", "shadow", "text", "vector")

    def __init__(self, partition: str, key: str):
        self.partition = partition
        self.key = key
        self.vector: list[float] | None = None
        self.text: str | None = None
        self.shadow: Entry | None = None


class CacheFilter(PassFilter):
    """Records the answer on its way out; keeps it when the caller got it whole."""

    __slots__ = ("_answer", "_body", "_call", "_events", "_exchange", "_flight", "_lookup", "_stage")

    def __init__(self, stage: CacheStage, call: Call, exchange: Exchange, lookup: Lookup, flight: Flight | None):
        self._stage = stage
        self._call = call
        self._exchange = exchange
        self._lookup = lookup
        lookup.text = keys.last_user_text(call.body)
        self._flight = flight
        self._answer: Answer | None = None
        self._events: list[bytes] = []
        self._body: bytes | None = None

    def start(self, answer: Answer) -> None:
        self._answer = answer
        if self._flight is not None:
            self._flight.begin(stream=answer.stream is not None, model=answer.model, dialect=answer.dialect)

    async def body(self, body: bytes) -> bytes:
        self._body = body
        return body

    def feed_now(self, events: list[bytes]) -> list[bytes]:
        self._events.extend(events)
        if self._flight is not None:
            self._flight.add(events)
        return events

    def close(self, complete: bool) -> None:
        answer, stage = self._answer, self._stage
        usage = _usage_of(answer)
        if self._flight is not None:
            self._flight.end(complete=complete, body=self._body, usage=usage)
            stage._flights.land(self._lookup.key, self._flight)
        if answer is None:
            return  # the upstream failed: nothing to keep
        route = self._exchange.route
        reason = self._unkept_reason(complete, answer)
        events = None
        if answer.stream is not None:
            openai = answer.dialect == OPENAI  # only OpenAI's extra usage chunk is left out (and made anew)
            events = [e for e in self._events if not (openai and is_usage_only(e))]
        if reason is None:
            served = answer.served
            cost = cost_usd(usage, served.price) if served is not None and served.price is not None else None
            entry = Entry(
                created=time.time(),
                dialect=answer.dialect,
                model=answer.model,
                usage=usage,
                cost=cost,
                text=answer_text(self._body, events),
                body=self._body,
                events=tuple(events) if events is not None else None,
            )
            _spawn(stage.store(self._lookup, entry, route))
        else:
            metrics.child(metrics.CACHE_STORES, route, reason).inc()
        shadow = self._lookup.shadow
        if shadow is not None and complete:
            _spawn(stage.compare(shadow, answer_text(self._body, events), route))

    def _unkept_reason(self, complete: bool, answer: Answer) -> str | None:
        if not complete:
            return "incomplete"
        if self._exchange.answer_altered:
            return "altered"
        if answer.served is None:
            return "not_from_provider"  # a reply another stage made (a block as a completion, ...)
        reasons = finish_reasons(self._body, self._events if answer.stream is not None else None, answer.dialect)
        if reasons == [None] and answer.dialect != OPENAI:
            return "dialect"
        allowed = ("stop", "tool_calls") if self._stage.config.cache_tool_calls else ("stop",)
        if any(r not in allowed for r in reasons):
            return "tool_calls" if "tool_calls" in reasons else "finish_reason"
        return None


def _usage_of(answer: Answer | None) -> Usage:
    if answer is None:
        return Usage()
    if answer.stream is not None:
        return answer.stream.usage()
    return answer.usage or Usage()


def _answer(entry: Entry, call: Call) -> Answer:
    stream: EventSource | None = None
    body = None
    if call.stream:
        stream = ReplaySource(entry.as_events(call.client_wants_usage), entry.usage)
    else:
        body = entry.as_body()
    return Answer(body=body, usage=entry.usage, stream=stream, model=entry.model, dialect=entry.dialect)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    from .store import unit

    return sum(x * y for x, y in zip(unit(a), unit(b), strict=False))


_background: set[asyncio.Task[None]] = set()


def _spawn(coroutine: Any) -> None:
    """Stores and comparisons happen after the answer went out; the caller never waits for them."""
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def build(rule: Rule, services: StageServices) -> CacheStage | None:
    config = rule.cache
    if config is None or services.cache_store is None:
        return None
    waits = [
        effective(services.pools[b.pool].config.timeouts, rule.timeouts).first_byte
        for b in (*rule.backends, *rule.fallbacks)
        if b.pool in services.pools
    ]
    wait = max((w for w in waits if w is not None), default=300.0)
    return CacheStage(config, rule, services.cache_store, services.models, wait)
