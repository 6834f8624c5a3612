"""Upstream calls: attempts over keys, weighted backends and fallbacks, then the relay of the answer.

An attempt may be retried elsewhere only while nothing has been sent to the caller. For a stream that means
until its first event: the first event is read before the caller's response starts, so a stream whose
upstream fails early falls back transparently. After that, a failure ends the stream with an SSE error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from tollway_contract.model import Backend, Rule

from . import metrics
from .capture import StreamCapture, completion_text
from .context import AttemptRecord, RequestContext
from .errors import GatewayError, sse_error_event
from .pools import PoolKeyRuntime, PoolRuntime
from .providers.base import Call, ProviderError, StreamFailed, StreamTranslator, Translator
from .routing import Match
from .snapshot import Snapshot
from .timeouts import effective
from .usage import Usage, estimate_input_tokens

log = logging.getLogger("tollway.upstream")

_KEY_FAILURE_STATUSES = (401, 403)  # the provider rejected our key: never the caller's fault, try another key


@dataclass(slots=True)
class Failure:
    reason: str  # "429", "5xx", "4xx", "timeout", "connect-error", "reset", "auth", "unsupported"
    status: int  # what the caller sees if this is the last word
    message: str
    retry_after: float | None = None
    provider_error: ProviderError | None = None


def plan_backends(rule: Rule) -> Iterator[Backend]:
    """Weighted backends in a weighted-random order (each once), then the ordered fallbacks."""
    remaining = [b for b in rule.backends if b.weight > 0]
    while remaining:
        chosen = (
            random.choices(remaining, weights=[b.weight for b in remaining])[0] if len(remaining) > 1 else remaining[0]
        )
        remaining.remove(chosen)
        yield chosen
    yield from rule.fallbacks


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM providers; the pool's default cooldown applies


def _classify(status: int) -> str:
    if status == 429:
        return "429"
    if status >= 500:
        return "5xx"
    if status in _KEY_FAILURE_STATUSES:
        return "auth"
    return "4xx"


class Upstream:
    def __init__(self, session: aiohttp.ClientSession):
        self.session = session

    async def forward(
        self, request: web.Request, ctx: RequestContext, snapshot: Snapshot, match: Match, call: Call
    ) -> web.StreamResponse:
        rule = match.rule
        last: Failure | None = None
        benched_pools: list[PoolRuntime] = []
        for backend in plan_backends(rule):
            pool = snapshot.pools[backend.pool]
            translator = snapshot.translators[backend.pool]
            model = backend.model or call.model
            if translator is None:
                last = Failure("unsupported", 502, f"provider {pool.config.provider!r} is not supported")
                ctx.attempts.append(AttemptRecord(pool.name, model, None, "unsupported"))
                continue
            keys: list[PoolKeyRuntime | None] = list(pool.key_order()) if not pool.keyless else [None]
            if not keys:
                benched_pools.append(pool)
                ctx.attempts.append(AttemptRecord(pool.name, model, None, "all-keys-benched"))
                last = last or Failure("benched", 503, f"every key of pool {pool.name} is cooling down")
                continue
            for key in keys[: 1 + rule.retry.attempts]:
                result = await self._attempt(request, ctx, snapshot, match, call, pool, translator, key, model)
                if not isinstance(result, Failure):
                    return result
                last = result
                error = result.provider_error
                if key is not None and error is not None and pool.config.cooldown.applies_to(error.status):
                    seconds = pool.bench(key, result.retry_after)
                    benched_pools.append(pool)
                    log.info(
                        "key benched",
                        extra={"pool": pool.name, "key_index": key.index, "seconds": round(seconds, 3)},
                    )
                if not self._retryable(result, rule):
                    raise self._final_error(result, benched_pools)
                if result.reason == "unsupported":
                    break  # the same on every key of this pool: move on to the next backend
        raise self._final_error(last, benched_pools, exhausted=True)

    @staticmethod
    def _retryable(failure: Failure, rule: Rule) -> bool:
        if failure.reason in ("auth", "unsupported"):
            return True
        return failure.reason in rule.retry.retry_on

    @staticmethod
    def _final_error(failure: Failure | None, benched: list[PoolRuntime], exhausted: bool = False) -> GatewayError:
        if failure is None:
            return GatewayError(
                503, "No backend is available for this model; check the AIRoute's status.", "no_backend"
            )
        if failure.reason in ("4xx", "unsupported") and failure.provider_error is not None:
            # The caller's request was refused by the provider: pass its status and message on.
            pe = failure.provider_error
            return GatewayError(failure.status, pe.message, pe.code, type=pe.type)
        if exhausted and benched:
            wait = min(p.next_available_in() for p in benched)
            return GatewayError(
                503,
                f"All upstream keys and backends for this model are unavailable ({failure.message}); retry later.",
                "upstream_unavailable",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return GatewayError(failure.status, failure.message, f"upstream_{failure.reason.replace('-', '_')}")

    async def _attempt(
        self,
        request: web.Request,
        ctx: RequestContext,
        snapshot: Snapshot,
        match: Match,
        call: Call,
        pool: PoolRuntime,
        translator: Translator,
        key: PoolKeyRuntime | None,
        model: str,
    ) -> web.StreamResponse | Failure:
        timeouts = effective(pool.config.timeouts, match.rule.timeouts)
        try:
            upstream = translator.build_request(call, pool, key, model)
        except GatewayError as exc:  # this provider cannot express the request; another backend may
            unsupported = Failure(
                "unsupported",
                exc.status,
                exc.message,
                provider_error=ProviderError(exc.status, exc.message, exc.type, exc.code),
            )
            return self._record_failure(ctx, pool, model, key.index if key else None, unsupported)
        client_timeout = _client_timeout(timeouts.total, timeouts.connect)
        key_index = key.index if key is not None else None
        if key is not None:
            key.state.in_flight += 1
        response: aiohttp.ClientResponse | None = None
        failure: Failure | None = None
        try:
            try:
                async with asyncio.timeout(timeouts.first_byte):
                    response = await self.session.post(
                        upstream.url, data=upstream.body, headers=upstream.headers, timeout=client_timeout
                    )
                    if response.status >= 400:
                        body = await response.read()
                        failure = self._http_failure(translator, response.status, body, response.headers)
                    elif call.stream:
                        stream = translator.stream(call)
                        first = await self._first_events(response, stream)
                        failure = None
                    else:
                        failure = None
                if failure is not None:
                    return self._record_failure(ctx, pool, model, key_index, failure)
                if call.stream:
                    self._served_by(ctx, pool, model, key_index)
                    result = await self._relay_stream(request, ctx, call, response, stream, first, timeouts.idle)
                else:
                    _set_idle_timeout(response, timeouts.idle)
                    body = await response.read()
                    self._served_by(ctx, pool, model, key_index)
                    result = self._whole_response(ctx, translator, call, body)
            except StreamFailed as exc:
                error = ProviderError(exc.status, exc.message, exc.type)
                reason = _classify(exc.status)
                failure = Failure(reason, 502, f"upstream stream failed: {exc.message}", provider_error=error)
                return self._record_failure(ctx, pool, model, key_index, failure)
            except TimeoutError:
                return self._record_failure(
                    ctx, pool, model, key_index, Failure("timeout", 504, f"upstream {pool.name} timed out")
                )
            except aiohttp.ClientConnectorError as exc:
                return self._record_failure(
                    ctx,
                    pool,
                    model,
                    key_index,
                    Failure("connect-error", 502, f"cannot connect to {pool.name}: {exc.os_error}"),
                )
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                return self._record_failure(
                    ctx,
                    pool,
                    model,
                    key_index,
                    Failure("reset", 502, f"upstream {pool.name} closed the connection: {type(exc).__name__}"),
                )
            return result
        finally:
            if key is not None:
                key.state.in_flight -= 1
            if response is not None:
                response.close()  # a no-op when fully read; otherwise it tells the provider to stop generating

    @staticmethod
    def _served_by(ctx: RequestContext, pool: PoolRuntime, model: str, key_index: int | None) -> None:
        ctx.attempts.append(AttemptRecord(pool.name, model, key_index, "ok"))
        ctx.pool, ctx.served_model, ctx.key_index = pool.name, model, key_index
        ctx.price = pool.price(model)

    @staticmethod
    def _http_failure(translator: Translator, status: int, body: bytes, headers: object) -> Failure:
        error = translator.translate_error(status, body)
        reason = _classify(status)
        caller_status = status if reason == "4xx" else 502
        return Failure(
            reason,
            caller_status,
            f"upstream answered {status}: {error.message}",
            retry_after=_retry_after(headers),  # type: ignore[arg-type]
            provider_error=error,
        )

    def _record_failure(
        self, ctx: RequestContext, pool: PoolRuntime, model: str, key_index: int | None, failure: Failure
    ) -> Failure:
        error = failure.provider_error
        outcome = error.status if error is not None and failure.reason != "unsupported" else failure.reason
        ctx.attempts.append(AttemptRecord(pool.name, model, key_index, str(outcome)))
        log.warning(
            "upstream attempt failed",
            extra={
                "request_id": ctx.request_id,
                "pool": pool.name,
                "key_index": key_index,
                "status": failure.provider_error.status if failure.provider_error else None,
                "reason": failure.reason,
                "detail": failure.message,
            },
        )
        return failure

    @staticmethod
    async def _first_events(response: aiohttp.ClientResponse, stream: StreamTranslator) -> list[bytes]:
        """Read until the translator yields its first event: up to here the attempt can still fail over."""
        while True:
            data = await response.content.readany()
            if not data:
                raise aiohttp.ClientPayloadError("stream ended before its first event")
            events = stream.feed(data)
            if events:
                return events

    def _whole_response(self, ctx: RequestContext, translator: Translator, call: Call, body: bytes) -> web.Response:
        out, usage = translator.translate_response(call, body)
        if ctx.capture:
            ctx.completion = completion_text(out)
        if call.egress is not None:
            out = call.egress.body(out)
        ctx.usage = usage or Usage(input_tokens=estimate_input_tokens(call.body), estimated=True)
        ctx.status = 200
        return web.Response(body=out, content_type="application/json", headers=_served_headers(ctx))

    async def _relay_stream(
        self,
        request: web.Request,
        ctx: RequestContext,
        call: Call,
        response: aiohttp.ClientResponse,
        stream: StreamTranslator,
        first: list[bytes],
        idle: float | None,
    ) -> web.StreamResponse:
        out = web.StreamResponse(status=200, headers=_served_headers(ctx, stream=True))
        out.content_type = "text/event-stream"
        await out.prepare(request)
        ctx.status = 200
        ctx.ttft = time.perf_counter() - ctx.started
        egress = call.egress.stream(ctx.served_model) if call.egress is not None else None
        capture = StreamCapture() if ctx.capture else None
        if capture is not None:
            capture.feed(first)
        metrics.IN_FLIGHT_STREAMS.inc()
        _set_idle_timeout(response, idle)  # aiohttp re-arms it on every read: no timer object per chunk
        try:
            await out.write(b"".join(egress.feed(first) if egress else first))
            content = response.content
            while True:
                data = await content.readany()
                if not data:
                    break
                events = stream.feed(data)
                if capture is not None:
                    capture.feed(events)
                if egress is not None and events:
                    events = egress.feed(events)
                if events:
                    await out.write(b"".join(events) if len(events) > 1 else events[0])
            tail = stream.finish()
            if egress is not None:
                tail = egress.feed(tail) + egress.finish()
            if tail:
                await out.write(b"".join(tail))
        except (
            TimeoutError,
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            aiohttp.ClientOSError,
        ) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else "closed the connection"
            ctx.error = f"upstream {reason} mid-stream"
            log.warning("stream failed after first event", extra={"request_id": ctx.request_id, "reason": reason})
            message = f"The upstream {reason} before the answer was complete."
            await _write_quietly(
                out,
                call.egress.stream_error_event(message, "upstream_stream_interrupted")
                if call.egress is not None
                else sse_error_event(message, code="upstream_stream_interrupted"),
            )
        except (ConnectionResetError, asyncio.CancelledError):
            ctx.error = "client disconnected"
            ctx.status = 499
            raise
        finally:
            metrics.IN_FLIGHT_STREAMS.dec()
            _settle_stream_usage(ctx, call, stream)
            if capture is not None:
                ctx.completion = capture.text
        await _write_eof_quietly(out)
        return out


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float | None, connect: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)


def _set_idle_timeout(response: aiohttp.ClientResponse, idle: float | None) -> None:
    """The longest gap between reads from now on (aiohttp raises ServerTimeoutError, a TimeoutError)."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = idle


def _settle_stream_usage(ctx: RequestContext, call: Call, stream: StreamTranslator) -> None:
    """Usage as the provider reported it, or (a stream cut short) an estimate: the prompt, one token per event."""
    ctx.usage = stream.state.usage or Usage(
        input_tokens=estimate_input_tokens(call.body), output_tokens=stream.state.content_events, estimated=True
    )


async def _write_quietly(out: web.StreamResponse, data: bytes) -> None:
    with contextlib.suppress(ConnectionResetError):
        await out.write(data)


async def _write_eof_quietly(out: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionResetError):
        await out.write_eof()


def _served_headers(ctx: RequestContext, stream: bool = False) -> dict[str, str]:
    headers = {
        "x-request-id": ctx.request_id,
        "x-tollway-route": ctx.route,
        "x-tollway-model": ctx.served_model,
        "x-tollway-pool": ctx.pool,
        "x-tollway-attempts": str(len(ctx.attempts)),
    }
    if ctx.response_headers:
        headers.update(ctx.response_headers)
    if stream:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    return headers
