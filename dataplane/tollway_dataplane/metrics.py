"""Prometheus metrics. Names and labels are part of the product's API (docs/metrics.md); prefix tollway_."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from fnmatch import translate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from tollway_contract.model import Route

from .context import RequestContext
from .routing import is_glob, literal_prefix


class _LoopValue:
    """A metric's number without prometheus_client's per-value lock. The data plane changes its metrics only on
    its event loop's thread (scrapes are served there too; the config watcher's threads touch none), so the lock
    guards nothing, and it was most of each update's cost: a counter's `inc` 1.0 -> 0.3 us, a histogram's
    `observe` 1.6 -> 0.6 us, some twenty of them per request on a guarded, cached route."""

    _multiprocess = False
    __slots__ = ("_exemplar", "_value")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


if values.ValueClass is values.MutexValue:  # multiprocess mode (PROMETHEUS_MULTIPROC_DIR) keeps its own
    values.ValueClass = _LoopValue

REGISTRY = CollectorRegistry(auto_describe=True)

_TRAFFIC = ("route", "model", "consumer", "pool")
# LLM latencies span tens of milliseconds (cache hits, embeddings) to minutes (long reasoning answers).
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TOKENS_PER_SECOND_BUCKETS = (1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)

REQUESTS = Counter("tollway_requests", "Requests, by outcome.", (*_TRAFFIC, "status_class"), registry=REGISTRY)
INPUT_TOKENS = Counter(
    "tollway_input_tokens", "Input (prompt) tokens, cached ones included.", _TRAFFIC, registry=REGISTRY
)
CACHED_INPUT_TOKENS = Counter(
    "tollway_cached_input_tokens", "Input tokens the provider served from its cache.", _TRAFFIC, registry=REGISTRY
)
OUTPUT_TOKENS = Counter("tollway_output_tokens", "Output (completion) tokens.", _TRAFFIC, registry=REGISTRY)
REASONING_TOKENS = Counter(
    "tollway_reasoning_tokens",
    "Output tokens the model spent reasoning (counted in output too).",
    _TRAFFIC,
    registry=REGISTRY,
)
ESTIMATED_USAGE = Counter(
    "tollway_estimated_usage_requests",
    "Requests whose usage the provider did not report (the token counters hold an estimate for them).",
    ("route", "pool"),
    registry=REGISTRY,
)
COST = Counter(
    "tollway_cost_usd",
    "Spend in US dollars, from the pools' pricing.",
    ("route", "model", "consumer"),
    registry=REGISTRY,
)
DURATION = Histogram(
    "tollway_request_duration_seconds",
    "Time from request to last byte.",
    ("route", "model"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "tollway_time_to_first_token_seconds",
    "Time to the first streamed event (streams only).",
    ("route", "model"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
OUTPUT_TPS = Histogram(
    "tollway_output_tokens_per_second",
    "Output tokens per second of generation (after the first token for streams).",
    ("route", "model"),
    buckets=_TOKENS_PER_SECOND_BUCKETS,
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "tollway_rate_limited_requests", "Requests refused by a TokenRateLimit.", ("limit", "consumer"), registry=REGISTRY
)
RETRIES = Counter(
    "tollway_upstream_retries", "Attempts after the first one of a request.", ("route", "pool"), registry=REGISTRY
)
FALLBACKS = Counter(
    "tollway_fallbacks",
    "Requests served by another pool than the first one tried.",
    ("route", "from_pool", "to_pool"),
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "tollway_upstream_errors", "Failed upstream attempts.", ("pool", "key_index", "reason"), registry=REGISTRY
)
CACHE_LOOKUPS = Counter(
    "tollway_cache_lookups",
    "Response cache lookups, by result: hit, semantic_hit, miss, bypass (the caller said no-store or no-cache), "
    "error (the store did not answer: served as a miss).",
    ("route", "result"),
    registry=REGISTRY,
)
CACHE_LOOKUP_SECONDS = Histogram(
    "tollway_cache_lookup_seconds",
    "Time to decide a cache lookup (semantic: the embedding call included).",
    ("route", "mode"),
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
CACHE_STORES = Counter(
    "tollway_cache_stores",
    "Answers offered to the cache, by outcome: stored, or why not (incomplete, finish_reason, tool_calls, too_large, "
    "altered, error).",
    ("route", "outcome"),
    registry=REGISTRY,
)
CACHE_SAVED_TOKENS = Counter(
    "tollway_cache_saved_tokens",
    "Tokens answered from the cache instead of a provider.",
    ("route", "kind"),
    registry=REGISTRY,
)
CACHE_SAVED_COST = Counter(
    "tollway_cache_saved_cost_usd",
    "What the answers served from the cache cost when they were made.",
    ("route",),
    registry=REGISTRY,
)
CACHE_SHADOW = Counter(
    "tollway_cache_shadow",
    "Shadow mode: semantic hits that would have been served (would_hit), and how the real answer compared with "
    "the would-be hit (agree: same text or similar enough, disagree).",
    ("route", "outcome"),
    registry=REGISTRY,
)
COALESCED = Counter(
    "tollway_cache_coalesced",
    "Requests answered by waiting on an identical request in flight.",
    ("route",),
    registry=REGISTRY,
)
RESPONSES_DROPPED = Counter(
    "tollway_responses_dropped",
    "Parts of /responses requests that Chat Completions cannot express (left out for translated pools).",
    ("kind", "type"),
    registry=REGISTRY,
)
# Content safety. A verdict is counted once per request, checker, direction and category it found (a pass has
# category ""); action is what it did: pass, audit, mask or block.
GUARDRAIL_VERDICTS = Counter(
    "tollway_guardrail_verdicts",
    "Guardrail verdicts by checker, direction, category and action.",
    ("route", "consumer", "checker", "direction", "category", "action"),
    registry=REGISTRY,
)
GUARDRAIL_CHECK_SECONDS = Histogram(
    "tollway_guardrail_check_duration_seconds",
    "Time one guardrail checker took for one check (a request, an answer, a stream window).",
    ("route", "checker", "direction"),
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
    registry=REGISTRY,
)
GUARDRAIL_ERRORS = Counter(
    "tollway_guardrail_errors",
    "Guardrail checks that failed (timeout, an HTTP status, invalid-response, missing-credentials, ...); "
    "failurePolicy decided what happened to the traffic.",
    ("route", "checker", "direction", "reason"),
    registry=REGISTRY,
)
SEARCH_DECISIONS = Counter(
    "tollway_search_decisions",
    "Chat requests on web-search routes, by what the stage decided: searched, not_asked (auto without "
    "web_search_options or a rewrite), not_needed (the rewrite said so), not_a_question (the last turn is not the "
    "user's), no_results, failed_open (every engine failed; answered without search), failed_closed (refused, 503).",
    ("route", "decision"),
    registry=REGISTRY,
)
SEARCH_REQUESTS = Counter(
    "tollway_search_requests",
    "Search engine calls, by status: ok, error (an HTTP error, an unreachable engine or an unreadable answer), "
    "timeout, unconfigured (a credential has no value).",
    ("route", "engine", "status"),
    registry=REGISTRY,
)
SEARCH_SECONDS = Histogram(
    "tollway_search_engine_seconds",
    "Time a search engine call took, failed calls included.",
    ("route", "engine"),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
    registry=REGISTRY,
)
SEARCH_REWRITES = Counter(
    "tollway_search_rewrites",
    "Rewrite model calls, by outcome: queries, none_needed, failed (the last user turn was searched instead).",
    ("route", "outcome"),
    registry=REGISTRY,
)
SEARCH_REWRITE_TOKENS = Counter(
    "tollway_search_rewrite_tokens",
    "Tokens the rewrite model used, by kind (input, output).",
    ("route", "kind"),
    registry=REGISTRY,
)
SEARCH_CITATIONS = Counter(
    "tollway_search_citations",
    "url_citation annotations returned for the [n] markers models wrote in grounded answers.",
    ("route",),
    registry=REGISTRY,
)
SATURATED = Counter(
    "tollway_pool_saturated",
    "Attempts turned away because every endpoint of the pool had its maxQueue requests queued.",
    ("route", "pool"),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge("tollway_in_flight_requests", "Requests being served.", registry=REGISTRY)
IN_FLIGHT_STREAMS = Gauge("tollway_in_flight_streams", "Streams being relayed.", registry=REGISTRY)
CONFIG_GENERATION = Gauge("tollway_config_generation", "Generation of the loaded config.", registry=REGISTRY)
CONFIG_LOADED_AT = Gauge("tollway_config_loaded_timestamp_seconds", "When the config was loaded.", registry=REGISTRY)
CONFIG_INFO = Info("tollway_config", "The loaded config's content hash.", registry=REGISTRY)
RELOAD_FAILURES = Counter("tollway_config_reload_failures", "Config changes rejected as invalid.", registry=REGISTRY)


class ConsumerLabel:
    """A cardinality guard for the consumer label: `on`, `off` (always empty) or capped at N distinct values."""

    def __init__(self, mode: str = "on"):
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        if mode not in ("on", "off") and not (mode.startswith("cap:") and mode[4:].isdigit()):
            raise ValueError(f"consumer label mode must be on, off or cap:N, got {mode!r}")
        self.mode = mode
        self.cap = int(mode[4:]) if mode.startswith("cap:") else None
        self.seen: set[str] = set()

    def __call__(self, consumer: str) -> str:
        if self.mode == "off":
            return ""
        if self.cap is None or consumer in self.seen:
            return consumer
        if len(self.seen) < self.cap:
            self.seen.add(consumer)
            return consumer
        return "other"


consumer_label = ConsumerLabel()


class ModelLabel:
    """A cardinality guard for the model label: only names the config knows become label values.

    A caller may put any string in `model`; labelling each one would let a caller create series without bound
    (2,000 invented names once added 152,000 series). The label is the served or requested model when the config
    names it (a rule's exact model, a backend's model), else the rule pattern it matched (`gpt-4o-*`), else
    `other` (unknown models, answered 404)."""

    OTHER = "other"
    _CACHE_LIMIT = 4096

    def __init__(self) -> None:
        self._exact: frozenset[str] = frozenset()
        self._globs: tuple[tuple[re.Pattern[str], str], ...] = ()
        self._cache: dict[str, str] = {}

    def configure(self, routes: Iterable[Route]) -> None:
        """The names of one config (on every reload)."""
        exact: set[str] = set()
        globs: set[str] = set()
        for route in routes:
            for rule in route.rules:
                for pattern in rule.models:
                    (globs if is_glob(pattern) else exact).add(pattern)
                exact.update(b.model for b in (*rule.backends, *rule.fallbacks) if b.model)
        self._exact = frozenset(exact)
        # The router's precedence among globs: the longest literal prefix first.
        ordered = sorted(globs, key=lambda p: (-len(literal_prefix(p)), p))
        self._globs = tuple((re.compile(translate(p)), p) for p in ordered)
        self._cache = {}

    def __call__(self, served: str, requested: str) -> str:
        if served in self._exact:
            return served
        if requested in self._exact:
            return requested
        name = served or requested
        label = self._cache.get(name)
        if label is None:
            label = next((pattern for regex, pattern in self._globs if regex.match(name)), self.OTHER)
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            self._cache[name] = label
        return label


model_label = ModelLabel()


class BenchedKeys(Collector):
    """Keys cooling down right now, per pool; read from the live snapshot at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any]] = dict  # the live snapshot's pools, set on every reload

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("tollway_benched_keys", "Provider keys cooling down, per pool.", labels=["pool"])
        now = time.monotonic()
        for name, pool in self.source().items():
            keys = getattr(pool, "keys", ())
            family.add_metric([name], sum(1 for k in keys if k.state.benched_until > now))
        yield family


BENCHED_KEYS = BenchedKeys()
REGISTRY.register(BENCHED_KEYS)


class CacheSize(Collector):
    """Entries and bytes the response cache holds in this process; read at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int]] = lambda: (0, 0)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries, size = self.source()
        yield GaugeMetricFamily("tollway_cache_entries", "Response cache entries held by this process.", value=entries)
        yield GaugeMetricFamily(
            "tollway_cache_bytes", "Bytes of response cache entries held by this process.", value=size
        )


CACHE_SIZE = CacheSize()
REGISTRY.register(CACHE_SIZE)


class Endpoints(Collector):
    """Per pool and endpoint (named host:port): what the last scrape said, this process's requests in flight,
    picks, and whether the endpoint may take a request now. Read from the live snapshot at scrape time, so the
    request path writes nothing for them but the state it keeps anyway."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any]] = dict  # the live snapshot's pools, set on every reload

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["pool", "endpoint"]
        age = GaugeMetricFamily(
            "tollway_endpoint_scrape_age_seconds",
            "Seconds since the endpoint's last good metrics scrape.",
            labels=labels,
        )
        queue = GaugeMetricFamily(
            "tollway_endpoint_queue", "Requests the endpoint queues (last scrape).", labels=labels
        )
        running = GaugeMetricFamily(
            "tollway_endpoint_running", "Requests the endpoint runs (last scrape).", labels=labels
        )
        kv = GaugeMetricFamily(
            "tollway_endpoint_kv_cache_usage_ratio",
            "Share of the endpoint's KV cache in use, 0..1 (last scrape).",
            labels=labels,
        )
        in_flight = GaugeMetricFamily(
            "tollway_endpoint_in_flight", "This process's requests in flight to the endpoint.", labels=labels
        )
        usable = GaugeMetricFamily(
            "tollway_endpoint_usable",
            "1 when the endpoint may take a request now (fresh metrics, not cooling down, below maxQueue).",
            labels=labels,
        )
        picks = CounterMetricFamily("tollway_endpoint_picks", "Attempts sent to the endpoint.", labels=labels)
        errors = CounterMetricFamily(
            "tollway_endpoint_scrape_errors", "Failed metrics scrapes of the endpoint.", labels=labels
        )
        now = time.monotonic()
        for name, pool in self.source().items():
            endpoints = getattr(pool, "endpoints", None)
            if endpoints is None:
                continue
            for member in endpoints.members:
                state = member.state
                values = [name, state.address]
                if state.load is not None and state.scraped_at is not None:
                    age.add_metric(values, now - state.scraped_at)
                    queue.add_metric(values, state.load.waiting)
                    running.add_metric(values, state.load.running)
                    kv.add_metric(values, state.load.kv_cache)
                in_flight.add_metric(values, state.in_flight)
                ok = endpoints.usable(state, now) and endpoints.open(endpoints.estimate(state))
                usable.add_metric(values, 1.0 if ok else 0.0)
                picks.add_metric(values, state.picks.get(name, 0))
                errors.add_metric(values, state.scrape_errors)
        yield from (age, queue, running, kv, in_flight, usable, picks, errors)


ENDPOINTS = Endpoints()
REGISTRY.register(ENDPOINTS)


SKIPPED = ("all-keys-benched", "unsupported", "no-endpoint", "saturated")


_STATUS_CLASSES = {2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class _Series:
    """The labelled children one (route, model, consumer, pool) writes to, looked up once instead of per request."""

    __slots__ = ("cached", "cost", "duration", "estimated", "input", "output", "reasoning", "requests", "tps", "ttft")

    def __init__(self, route: str, model: str, consumer: str, pool: str):
        labels = (route, model, consumer, pool)
        self.requests = {c: REQUESTS.labels(*labels, c) for c in ("2xx", "3xx", "4xx", "5xx", "none")}
        self.input = INPUT_TOKENS.labels(*labels)
        self.output = OUTPUT_TOKENS.labels(*labels)
        self.cached = CACHED_INPUT_TOKENS.labels(*labels)
        self.reasoning = REASONING_TOKENS.labels(*labels)
        self.estimated = ESTIMATED_USAGE.labels(route, pool)
        self.cost = COST.labels(route, model, consumer)
        self.duration = DURATION.labels(route, model)
        self.ttft = TTFT.labels(route, model)
        self.tps = OUTPUT_TPS.labels(route, model)


_series: dict[tuple[str, str, str, str], _Series] = {}


def _series_for(route: str, model: str, consumer: str, pool: str) -> _Series:
    key = (route, model, consumer, pool)
    series = _series.get(key)
    if series is None:
        if len(_series) > 50_000:  # bounded by the cardinality guard in practice; never unbounded
            _series.clear()
        series = _series[key] = _Series(route, model, consumer, pool)
    return series


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """A metric's labelled child, looked up once: `labels()` costs more than the update it leads to (its lock,
    its validation), and a stage's counters see the same few label sets on every request."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        if len(_children) > 50_000:  # bounded by the consumer label's cardinality guard in practice
            _children.clear()
        found = _children[key] = metric.labels(*labels)
    return found


def observe(ctx: RequestContext) -> None:
    if not ctx.endpoint:
        return  # health checks and unknown paths are not traffic
    model = model_label(ctx.served_model, ctx.requested_model)
    route = ctx.route
    series = _series_for(route, model, consumer_label(ctx.consumer), ctx.pool)
    status = ctx.status
    series.requests[_STATUS_CLASSES.get(status // 100, "none") if status else "none"].inc()
    if len(ctx.attempts) > 1 or (ctx.attempts and ctx.attempts[0].outcome != "ok"):
        _observe_attempts(ctx)
    usage = ctx.usage
    if usage is not None and ctx.pool:
        series.input.inc(usage.input_tokens)
        series.output.inc(usage.output_tokens)
        if usage.cached_input_tokens:
            series.cached.inc(usage.cached_input_tokens)
        if usage.reasoning_tokens:
            series.reasoning.inc(usage.reasoning_tokens)
        if usage.estimated:
            series.estimated.inc()
        if ctx.cost is not None:
            series.cost.inc(ctx.cost)
    if not route:
        return
    series.duration.observe(ctx.duration)
    if ctx.ttft is not None:
        series.ttft.observe(ctx.ttft)
    if usage is not None and usage.output_tokens > 0 and status == 200:
        generation = ctx.duration - (ctx.ttft or 0.0)
        if generation > 0:
            series.tps.observe(usage.output_tokens / generation)


def _observe_attempts(ctx: RequestContext) -> None:
    attempts = ctx.attempts
    if not attempts:
        return
    called = [a for a in attempts if a.outcome not in SKIPPED]  # pools skipped without a call are not attempts
    for attempt in called[1:]:
        RETRIES.labels(ctx.route, attempt.pool).inc()
    for attempt in attempts:
        if attempt.outcome == "saturated":
            SATURATED.labels(ctx.route, attempt.pool).inc()
    for attempt in called:
        if attempt.outcome != "ok":
            key_index = "" if attempt.key_index is None else str(attempt.key_index)
            UPSTREAM_ERRORS.labels(attempt.pool, key_index, attempt.outcome).inc()
    if ctx.pool and attempts[0].pool != ctx.pool:
        FALLBACKS.labels(ctx.route, attempts[0].pool, ctx.pool).inc()


def rate_limited(limit: str, consumer: str) -> None:
    RATE_LIMITED.labels(limit, consumer_label(consumer)).inc()
