"""Prometheus metrics (names are part of the API: prefix tollway_)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from .context import RequestContext

REGISTRY = CollectorRegistry(auto_describe=True)

_LABELS = ("route", "model", "consumer", "pool", "status_class")
# LLM latencies span tens of milliseconds (cache hits, embeddings) to minutes (long reasoning answers).
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

REQUESTS = Counter("tollway_requests", "Requests served, by outcome.", _LABELS, registry=REGISTRY)
INPUT_TOKENS = Counter("tollway_input_tokens", "Input (prompt) tokens.", _LABELS[:4], registry=REGISTRY)
OUTPUT_TOKENS = Counter("tollway_output_tokens", "Output (completion) tokens.", _LABELS[:4], registry=REGISTRY)
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
RATE_LIMITED = Counter(
    "tollway_rate_limited_requests", "Requests refused by a TokenRateLimit.", ("limit",), registry=REGISTRY
)
CONFIG_GENERATION = Gauge("tollway_config_generation", "Generation of the loaded config.", registry=REGISTRY)
CONFIG_LOADED_AT = Gauge("tollway_config_loaded_timestamp_seconds", "When the config was loaded.", registry=REGISTRY)
CONFIG_INFO = Info("tollway_config", "The loaded config's content hash.", registry=REGISTRY)
RELOAD_FAILURES = Counter("tollway_config_reload_failures", "Config changes rejected as invalid.", registry=REGISTRY)


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if status else "none"


def observe(ctx: RequestContext) -> None:
    if not ctx.endpoint:
        return  # health checks and unknown paths are not traffic
    model = ctx.served_model or ctx.requested_model
    REQUESTS.labels(ctx.route, model, ctx.consumer, ctx.pool, _status_class(ctx.status)).inc()
    if ctx.usage is not None:
        INPUT_TOKENS.labels(ctx.route, model, ctx.consumer, ctx.pool).inc(ctx.usage.input_tokens)
        OUTPUT_TOKENS.labels(ctx.route, model, ctx.consumer, ctx.pool).inc(ctx.usage.output_tokens)
    if ctx.route:
        DURATION.labels(ctx.route, model).observe(ctx.duration)
        if ctx.ttft is not None:
            TTFT.labels(ctx.route, model).observe(ctx.ttft)
