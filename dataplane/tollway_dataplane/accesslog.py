"""One JSON line per request, with an `ai_log` object. Never a key, never an Authorization header."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import orjson

from .capture import redact
from .context import RequestContext

log = logging.getLogger("tollway.access")


def record(ctx: RequestContext, text_limit: int = 2000) -> dict[str, Any]:
    usage = ctx.usage
    ai_log: dict[str, Any] = {
        "route": ctx.route,
        "consumer": ctx.consumer,
        "requested_model": ctx.requested_model,
        "served_model": ctx.served_model,
        "pool": ctx.pool,
        "key_index": ctx.key_index,
        "endpoint": ctx.served_endpoint,
        "stream": ctx.stream,
        "attempts": len(ctx.attempts),
        "fallback_chain": [
            {"pool": a.pool, "model": a.model, "key_index": a.key_index, "endpoint": a.endpoint, "outcome": a.outcome}
            for a in ctx.attempts
        ],
        "input_tokens": usage.input_tokens if usage else None,
        "cached_input_tokens": usage.cached_input_tokens if usage else None,
        "cache_creation_input_tokens": usage.cache_creation_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "reasoning_tokens": usage.reasoning_tokens if usage else None,
        "usage_estimated": usage.estimated if usage else None,
        "cost_usd": round(ctx.cost, 8) if ctx.cost is not None else None,
        "ttft_ms": round(ctx.ttft * 1000, 3) if ctx.ttft is not None else None,
        "duration_ms": round(ctx.duration * 1000, 3),
        "status": ctx.status,
        "cache": None,  # filled in by the response cache when a route enables it
        "guardrail": None,  # filled in by content safety when a route enables it
        "search": None,  # filled in by web search when a route enables it
        "error": ctx.error or None,
    }
    if ctx.notes:
        ai_log.update(ctx.notes)  # what the route's stages report, each under its own field
    if ctx.capture:
        ai_log["prompt"] = redact(ctx.prompt or "", text_limit)
        ai_log["completion"] = redact(ctx.completion or "", text_limit)
    return {
        "time": round(time.time(), 3),
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "status": ctx.status,
        "duration_ms": ai_log["duration_ms"],
        "ai_log": ai_log,
    }


class BufferedSink:
    """Writes access-log lines to a file descriptor once per event-loop turn instead of once per line: one
    system call for every request served in that turn. Lines still leave within the turn they were logged in."""

    def __init__(self, fd: int = 2):
        self.fd = fd
        self._lines: list[bytes] = []

    def __call__(self, line: bytes) -> None:
        self._lines.append(line)
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (shutdown): write now
                self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data, self._lines = b"".join(self._lines), []
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:  # a non-blocking stderr that is full: wait for the reader briefly
                time.sleep(0.001)
                continue
            view = view[written:]


# Set by `tollway run`; without it (tests, embedding) lines go through the `tollway.access` logger.
sink: Callable[[bytes], None] | None = None


def use_sink(fd: int | None) -> None:
    """Write access-log lines straight to a file descriptor (buffered per loop turn), or (None) via logging."""
    global sink
    sink = BufferedSink(fd) if fd is not None else None


def write(ctx: RequestContext, text_limit: int = 2000) -> None:
    if not ctx.endpoint:
        return
    if sink is not None:
        sink(orjson.dumps(record(ctx, text_limit), option=orjson.OPT_APPEND_NEWLINE))
    elif log.isEnabledFor(logging.INFO):
        log.info(orjson.dumps(record(ctx, text_limit)).decode())
