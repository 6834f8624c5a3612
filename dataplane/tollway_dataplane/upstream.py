"""The upstream executor: attempts over keys, weighted backends and fallbacks, until one answers.

It returns an `Answer` and never writes to the caller: the relay does. An attempt may be retried elsewhere only
while nothing has reached the caller. For a stream that means until its first event: the executor reads the
first event before it returns, so a stream whose upstream fails early falls back transparently; what comes after
is the relay's (a failure then ends the stream with an error event).

A pool with `endpoints` (several model servers) makes each attempt pick an endpoint as well as a key: the
endpoint's base URL is where the attempt goes (the translator is handed the pool as seen there), a failed
endpoint is skipped for a cooldown and the next try picks another one, and a pool whose endpoints are all at
their queue limit is saturated, a failure retried like a 429, so the rule's fallbacks serve.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson
from tollway_contract.model import Backend, Retry, Rule, Timeouts

from . import h1
from .answer import Answer, AttemptRecord, Served, StreamInterrupted
from .call import Call
from .endpoints.balancer import Member, Refusal
from .endpoints.state import EndpointState
from .errors import GatewayError
from .pools import PoolKeyRuntime, PoolRuntime
from .providers.base import InvalidResponse, ProviderError, StreamFailed, StreamTranslator, Translator
from .timeouts import effective
from .usage import Usage, estimate_input_tokens

log = logging.getLogger("tollway.upstream")

_KEY_FAILURE_STATUSES = (401, 403)  # the provider rejected our key: never the caller's fault, try another key
# Failures without a retryOn condition of their own, and the condition that covers them.
_RETRY_CLASS = {"invalid-response": "5xx", "saturated": "429"}
# Failures that say the model server itself is unwell: its endpoint is skipped for the pool's endpoint cooldown.
_ENDPOINT_FAILURES = frozenset({"5xx", "connect-error", "timeout", "reset", "invalid-response"})
_BROKEN = (h1.Disconnected, h1.BadResponse)


@dataclass(slots=True)
class Failure:
    reason: str  # "429", "5xx", "4xx", "timeout", "connect-error", "reset", "auth", "unsupported", "saturated", ...
    status: int  # what the caller sees if this is the last word
    message: str
    retry_after: float | None = None
    provider_error: ProviderError | None = None

    @property
    def outcome(self) -> str:
        """How the attempt is recorded: the provider's status when it answered with one, else the reason."""
        error = self.provider_error
        return str(error.status) if error is not None and self.reason != "unsupported" else self.reason


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class Attempt:
    """One try: a pool, one of its keys (None: a keyless pool), the model name to send, the timeouts that apply,
    and for a pool with endpoints the endpoint picked for it."""

    pool: PoolRuntime
    translator: Translator
    key: PoolKeyRuntime | None
    model: str
    timeouts: Timeouts
    endpoint: Member | None = None

    @property
    def key_index(self) -> int | None:
        return self.key.index if self.key is not None else None

    @property
    def target(self) -> PoolRuntime:
        """The pool as the translator sees it: at the picked endpoint's base URL, if any."""
        return self.pool if self.endpoint is None else self.endpoint.target

    @property
    def address(self) -> str | None:
        return self.endpoint.address if self.endpoint is not None else None

    def record(self, outcome: str) -> AttemptRecord:
        return AttemptRecord(self.pool.name, self.model, self.key_index, outcome, self.address)

    def served(self) -> Served:
        return Served(self.pool.name, self.model, self.key_index, self.pool.price(self.model), self.address)


class UpstreamError(GatewayError):
    """Every attempt failed; carries them for the access log and metrics."""

    def __init__(self, error: GatewayError, attempts: list[AttemptRecord]):
        super().__init__(error.status, error.message, error.code, type=error.type, headers=error.headers)
        self.attempts = attempts


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
    value = headers.get("retry-after") if headers is not None else None  # the client's names are lower case
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


class Backends(Protocol):
    """The pools of a config and their translators (a snapshot is one)."""

    @property
    def pools(self) -> Mapping[str, PoolRuntime]: ...

    @property
    def translators(self) -> Mapping[str, Translator | None]: ...


class Upstream:
    def __init__(self, client: h1.Client | None = None):
        self.client = client or h1.Client()

    async def forward(self, call: Call, rule: Rule, backends: Backends, *, request_id: str = "") -> Answer:
        """The first answer any backend gives, or UpstreamError with every attempt."""
        attempts: list[AttemptRecord] = []
        last: Failure | None = None
        benched_pools: list[PoolRuntime] = []
        for backend in plan_backends(rule):
            pool = backends.pools[backend.pool]
            translator = backends.translators[backend.pool]
            model = backend.model or call.model
            if translator is None:
                last = Failure("unsupported", 502, f"provider {pool.config.provider!r} is not supported")
                attempts.append(AttemptRecord(pool.name, model, None, "unsupported"))
                continue
            keys: list[PoolKeyRuntime | None] = list(pool.key_order()) if not pool.keyless else [None]
            if not keys:
                benched_pools.append(pool)
                attempts.append(AttemptRecord(pool.name, model, None, "all-keys-benched"))
                last = last or Failure("benched", 503, f"every key of pool {pool.name} is cooling down")
                continue
            timeouts = effective(pool.config.timeouts, rule.timeouts)
            tries = 1 + rule.retry.attempts
            endpoints = pool.endpoints
            if endpoints is not None:
                keys = [keys[i % len(keys)] for i in range(tries)]  # every try on another endpoint; keys rotate
            tried: list[Member] = []
            for key in keys[:tries]:
                endpoint = None
                if endpoints is not None:
                    picked = endpoints.pick(call, tried)
                    if isinstance(picked, Refusal):
                        refused = _refusal(pool, model, picked, first=not tried)
                        if refused is not None:
                            attempts.append(AttemptRecord(pool.name, model, None, refused.reason))
                            # Saturation is the news; an unusable pool only if nothing failed before it.
                            last = refused if refused.reason == "saturated" else last or refused
                            if refused.reason == "saturated" and not self._retryable(refused, rule):
                                raise UpstreamError(self._final_error(refused, benched_pools), attempts)
                        break  # nothing (else) in this pool may take the request: the next backend
                    endpoint = picked
                    tried.append(endpoint)
                attempt = Attempt(pool, translator, key, model, timeouts, endpoint)
                result = await self._try(attempt, call)
                if isinstance(result, Answer):
                    attempts.append(attempt.record("ok"))
                    result.attempts = attempts
                    return result
                attempts.append(attempt.record(result.outcome))
                _log_failure(attempt, result, request_id)
                last = result
                error = result.provider_error
                server_error = endpoint is not None and result.reason in _ENDPOINT_FAILURES
                if server_error and endpoints is not None and endpoint is not None:
                    endpoints.bench(endpoint)  # passive health: the next try (and request) picks another server
                    log.info(
                        "endpoint benched",
                        extra={"pool": pool.name, "endpoint": endpoint.address, "reason": result.reason},
                    )
                # A 5xx from one model server says nothing about the key, which the other servers accept too.
                if (
                    key is not None
                    and error is not None
                    and not server_error
                    and pool.config.cooldown.applies_to(error.status)
                ):
                    seconds = pool.bench(key, result.retry_after)
                    benched_pools.append(pool)
                    log.info(
                        "key benched",
                        extra={"pool": pool.name, "key_index": key.index, "seconds": round(seconds, 3)},
                    )
                if not self._retryable(result, rule):
                    raise UpstreamError(self._final_error(result, benched_pools), attempts)
                if result.reason == "unsupported":
                    break  # the same on every key of this pool: move on to the next backend
        raise UpstreamError(self._final_error(last, benched_pools, exhausted=True), attempts)

    @staticmethod
    def _retryable(failure: Failure, rule: Rule) -> bool:
        if failure.reason in ("auth", "unsupported"):
            return True
        return _RETRY_CLASS.get(failure.reason, failure.reason) in rule.retry.retry_on

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
        headers = {}
        if failure.reason == "saturated" and failure.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(failure.retry_after)))
        code = f"upstream_{failure.reason.replace('-', '_')}"
        return GatewayError(failure.status, failure.message, code, headers=headers)

    async def _try(self, attempt: Attempt, call: Call) -> Answer | Failure:
        pool, translator, key, timeouts = attempt.pool, attempt.translator, attempt.key, attempt.timeouts
        try:
            upstream = translator.build_request(call, attempt.target, key, attempt.model)
        except GatewayError as exc:  # this provider cannot express the request; another backend may
            error = ProviderError(exc.status, exc.message, exc.type, exc.code)
            return Failure("unsupported", exc.status, exc.message, provider_error=error)
        if key is not None:
            key.state.in_flight += 1
        endpoint = attempt.endpoint.state if attempt.endpoint is not None else None
        if endpoint is not None:
            endpoint.in_flight += 1
        response: h1.Response | None = None
        handed_over = False  # a stream's response and key now belong to the relay
        try:
            response = await self.client.request(
                upstream.url,
                upstream.headers,
                upstream.body,
                connect=timeouts.connect,
                first_byte=timeouts.first_byte,
                total=timeouts.total,
            )
            if response.status >= 400:
                body = await response.read(timeouts.idle)
                return _http_failure(translator, response.status, body, response.headers)
            if call.stream:
                stream = translator.stream(call)
                first = await _first_events(response, stream)  # still within the first-byte deadline
                source = UpstreamStream(response, stream, first, key, call, timeouts.idle, endpoint)
                handed_over = True
                return Answer(stream=source, model=attempt.model, served=attempt.served(), dialect=upstream.dialect)
            body, usage = translator.translate_response(call, await response.read(timeouts.idle))
            usage = usage or Usage(input_tokens=estimate_input_tokens(call.body), estimated=True)
            return Answer(
                body=body, usage=usage, model=attempt.model, served=attempt.served(), dialect=upstream.dialect
            )
        except StreamFailed as exc:
            error = ProviderError(exc.status, exc.message, exc.type)
            return Failure(_classify(exc.status), 502, f"upstream stream failed: {exc.message}", provider_error=error)
        except InvalidResponse as exc:
            return Failure("invalid-response", 502, f"upstream {pool.name}: {exc}")
        except orjson.JSONEncodeError:  # valid JSON too deep for the caller's shape: one the gateway cannot express
            return Failure("invalid-response", 502, f"upstream {pool.name} answered with JSON nested too deep")
        except TimeoutError:
            return Failure("timeout", 504, f"upstream {pool.name} timed out")
        except h1.ConnectFailed as exc:
            return Failure("connect-error", 502, f"cannot connect to {pool.name}: {exc}")
        except _BROKEN as exc:
            return Failure("reset", 502, f"upstream {pool.name} closed the connection: {type(exc).__name__}")
        finally:
            if not handed_over:
                if key is not None:
                    key.state.in_flight -= 1
                if endpoint is not None:
                    endpoint.in_flight -= 1
                if response is not None:
                    response.close()  # reuses a connection read to its end; else closes it: the provider stops


@dataclass(frozen=True, slots=True)
class PoolModels:
    """Model calls a stage makes (an embedding, a judge, a query rewrite) through a named pool, so they get the
    pool's keys, timeouts, cooldowns and retries exactly as caller requests do. Implements stages' ModelCaller."""

    upstream: Upstream
    pools: Mapping[str, PoolRuntime]
    translators: Mapping[str, Translator | None]

    async def call(self, pool: str, call: Call, *, request_id: str = "") -> Answer:
        rule = Rule(models=(call.model,), backends=(Backend(pool=pool),), retry=Retry(attempts=1))
        return await self.upstream.forward(call, rule, self, request_id=request_id)


class UpstreamStream:
    """The rest of an upstream stream, as an `EventSource`. Owns the connection and the key's (and endpoint's)
    in-flight count until `close`; the idle timeout bounds every gap between reads, the one right after the first
    event too. `push` hands the rest to a sink called from the connection itself (the relay's fast path, no
    coroutine switch per chunk); `next` pulls batch by batch (when response filters must await)."""

    __slots__ = ("_call", "_closed", "_endpoint", "_idle", "_key", "_response", "_stream", "first")

    def __init__(
        self,
        response: h1.Response,
        stream: StreamTranslator,
        first: list[bytes],
        key: PoolKeyRuntime | None,
        call: Call,
        idle: float | None,
        endpoint: EndpointState | None = None,
    ):
        self._response = response
        self._stream = stream
        self._key = key
        self._endpoint = endpoint
        self._call = call
        self._idle = idle
        self._closed = False
        self.first = first

    async def next(self) -> list[bytes] | None:
        try:
            data = await self._response.readany(self._idle)
        except TimeoutError:
            raise StreamInterrupted("timed out") from None
        except _BROKEN:
            raise StreamInterrupted("closed the connection") from None
        if not data:
            return None
        return self.translate(data)

    def translate(self, data: bytes) -> list[bytes]:
        """Upstream bytes to the caller's events (the translator's state moves on)."""
        try:
            return self._stream.feed(data)
        except orjson.JSONEncodeError:  # an event too deeply nested to translate: the answer cannot go on
            raise StreamInterrupted("sent an event nested too deep to translate") from None

    def push(self, sink: h1.BodySink) -> None:
        self._response.push(sink, self._idle)

    def pull(self) -> None:
        self._response.pull()

    def pause_reading(self) -> None:
        self._response.pause_reading()

    def resume_reading(self) -> None:
        self._response.resume_reading()

    def tail(self) -> list[bytes]:
        return self._stream.finish()

    def usage(self) -> Usage:
        """As the provider reported it, or (a stream cut short) an estimate: the prompt, one token per event."""
        return self._stream.state.usage or Usage(
            input_tokens=estimate_input_tokens(self._call.body),
            output_tokens=self._stream.state.content_events,
            estimated=True,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._key is not None:
            self._key.state.in_flight -= 1
        if self._endpoint is not None:
            self._endpoint.in_flight -= 1
        self._response.close()


def _http_failure(translator: Translator, status: int, body: bytes, headers: Mapping[str, str]) -> Failure:
    error = translator.translate_error(status, body)
    reason = _classify(status)
    caller_status = status if reason == "4xx" else 502
    return Failure(
        reason,
        caller_status,
        f"upstream answered {status}: {error.message}",
        retry_after=_retry_after(headers),
        provider_error=error,
    )


def _refusal(pool: PoolRuntime, model: str, refusal: Refusal, *, first: bool) -> Failure | None:
    """What a pool whose endpoints refused the attempt counts as: saturated (retried like a 429), or, when
    nothing of the pool was tried yet, unavailable (a skip, like a pool whose keys are all benched). None: this
    request tried every endpoint it may."""
    if refusal.reason == "saturated":
        message = f"every endpoint of pool {pool.name} for {model!r} has its maxQueue requests queued"
        return Failure("saturated", 429, message, retry_after=refusal.retry_after)
    if first:
        return Failure("no-endpoint", 503, f"pool {pool.name} has no endpoint that may take a request now")
    return None


def _log_failure(attempt: Attempt, failure: Failure, request_id: str) -> None:
    log.warning(
        "upstream attempt failed",
        extra={
            "request_id": request_id,
            "pool": attempt.pool.name,
            "key_index": attempt.key_index,
            "endpoint": attempt.address,
            "status": failure.provider_error.status if failure.provider_error else None,
            "reason": failure.reason,
            "detail": failure.message,
        },
    )


async def _first_events(response: h1.Response, stream: StreamTranslator) -> list[bytes]:
    """Read until the translator yields its first event: up to here the attempt can still fail over."""
    while True:
        data = await response.readany()
        if not data:
            raise h1.Disconnected("the stream ended before its first event")
        events = stream.feed(data)
        if events:
            return events
