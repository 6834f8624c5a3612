"""One JSON line per request, with an `ai_log` object. Never a key, never an Authorization header."""

from __future__ import annotations

import logging
import time

import orjson

from .context import RequestContext

log = logging.getLogger("tollway.access")


def record(ctx: RequestContext) -> dict[str, object]:
    usage = ctx.usage
    return {
        "time": time.time(),
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "status": ctx.status,
        "duration_ms": round(ctx.duration * 1000, 3),
        "ai_log": {
            "route": ctx.route,
            "consumer": ctx.consumer,
            "requested_model": ctx.requested_model,
            "served_model": ctx.served_model,
            "pool": ctx.pool,
            "key_index": ctx.key_index,
            "stream": ctx.stream,
            "attempts": [[a.pool, a.model, a.key_index, a.outcome] for a in ctx.attempts],
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "usage_estimated": usage.estimated if usage else None,
            "ttft_ms": round(ctx.ttft * 1000, 3) if ctx.ttft is not None else None,
            "error": ctx.error or None,
        },
    }


def write(ctx: RequestContext) -> None:
    if ctx.endpoint and log.isEnabledFor(logging.INFO):
        log.info(orjson.dumps(record(ctx)).decode())
