"""The limit stage of the request path: reserve an estimate before forwarding, settle the real usage after.

Reserving first is what makes limits hold under bursts: fifty concurrent requests cannot all pass a check
that each of them would pass alone, because each one's estimate is already counted when the next is decided.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from tollway_contract.model import Limit, RateLimit

from ..errors import GatewayError
from ..usage import Usage, estimate_input_tokens
from .backends import BackendUnavailable, LimitBackend, ceil_seconds
from .gcra import Decision, LimitSpec

log = logging.getLogger("tollway.ratelimit")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a limit key can be made of, for one request."""

    consumer: str
    key_hash: str
    route: str
    model: str
    source_ip: str
    headers: Mapping[str, str]
    input_estimate: int
    output_estimate: int | None  # max_tokens / max_completion_tokens when the caller set one


@dataclass(slots=True)
class Held:
    """One limit's share of a reservation, to be settled when the real usage is known."""

    key: str
    limit: Limit
    reserved: int
    period: float


@dataclass(slots=True)
class Reservation:
    held: list[tuple[LimitBackend, list[Held]]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


def _format_reset(seconds: float) -> str:
    """OpenAI's style: 1s, 6m0s, 20ms."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _key_value(part: str, facts: RequestFacts) -> str:
    if part == "consumer":
        return facts.consumer
    if part == "apiKey":
        return facts.key_hash[:24]  # a hash prefix: the key itself never leaves the request
    if part == "route":
        return facts.route
    if part == "model":
        return facts.model
    if part == "sourceIP":
        return facts.source_ip
    return facts.headers.get(part[len("header:") :], "")


def _units(limit: Limit, input_tokens: int, output_tokens: int) -> int:
    if limit.requests is not None:
        return 1
    if limit.count == "input":
        return input_tokens
    if limit.count == "output":
        return output_tokens
    return input_tokens + output_tokens


class RateLimiter:
    def __init__(self, backend: LimitBackend, *, on_limited: Callable[[str, str], None] | None = None):
        self.backend = backend
        self._on_limited = on_limited  # (limit name, consumer): counts refusals without importing metrics
        self._settling: set[asyncio.Task[None]] = set()
        self._queued: list[tuple[Reservation, Usage | None]] = []

    async def reserve(self, limits: tuple[RateLimit, ...], facts: RequestFacts) -> Reservation:
        """Reserve for every applicable limit; raise 429 when one does not fit (503: closed and unreachable)."""
        reservation = Reservation()
        token_state: tuple[int, int, float] | None = None  # (limit, remaining, reset) of the tightest token limit
        request_state: tuple[int, int, float] | None = None
        for rate_limit in limits:
            values = tuple(_key_value(part, facts) for part in rate_limit.key)
            chosen = rate_limit.limits
            for override in rate_limit.overrides:
                if all(values[rate_limit.key.index(p)] == v for p, v in override.match if p in rate_limit.key):
                    chosen = override.limits
                    break
            output = facts.output_estimate if facts.output_estimate is not None else rate_limit.default_max_tokens
            key_text = "|".join(values)
            if len(key_text) > 96:
                key_text = hashlib.sha256(key_text.encode()).hexdigest()[:32]
            tag = f"{{{rate_limit.name}|{key_text}}}"  # one hash tag: every key of this decision in one slot
            held, specs = [], []
            for limit in chosen:
                amount = limit.tokens if limit.tokens is not None else limit.requests
                assert amount is not None
                cost = min(_units(limit, facts.input_estimate, output), amount)
                kind = f"t-{limit.count}" if limit.tokens is not None else "r"
                spec = LimitSpec(
                    key=f"tollway:{tag}:{kind}:{limit.window:g}", amount=amount, window=limit.window, cost=cost
                )
                specs.append(spec)
                held.append(Held(spec.key, limit, cost, spec.period))
            try:
                decision = await self.backend.reserve(tuple(specs))
            except BackendUnavailable:
                if rate_limit.failure_policy == "closed":
                    await self.release(reservation)
                    raise GatewayError(
                        503,
                        "Rate limiting is temporarily unavailable; retry shortly.",
                        "rate_limiter_unavailable",
                        headers={"Retry-After": "1"},
                    ) from None
                continue  # failurePolicy open: this limit does not apply while its state is unreachable
            for spec, state in zip(specs, decision.states, strict=True):
                entry = (spec.amount, state.remaining, state.reset)
                is_tokens = held[specs.index(spec)].limit.tokens is not None
                if is_tokens and (token_state is None or state.remaining < token_state[1]):
                    token_state = entry
                if not is_tokens and (request_state is None or state.remaining < request_state[1]):
                    request_state = entry
            if not decision.allowed:
                await self.release(reservation)
                raise self._limited(rate_limit, facts, decision, token_state, request_state)
            reservation.held.append((self.backend, held))
        reservation.headers = _headers(token_state, request_state)
        return reservation

    def _limited(
        self,
        rate_limit: RateLimit,
        facts: RequestFacts,
        decision: Decision,
        token_state: tuple[int, int, float] | None,
        request_state: tuple[int, int, float] | None,
    ) -> GatewayError:
        if self._on_limited is not None:
            self._on_limited(rate_limit.name, facts.consumer)
        headers = _headers(token_state, request_state)
        headers["Retry-After"] = str(ceil_seconds(decision.retry_after))
        return GatewayError(429, rate_limit.message, "rate_limit_exceeded", headers=headers)

    async def release(self, reservation: Reservation) -> None:
        """Give back everything reserved (the request never reached a provider)."""
        await self._adjust(reservation, None, forwarded=False)

    def settle_soon(self, reservation: Reservation, usage: Usage | None) -> None:
        """Charge the real usage (refund or top up the estimate) without holding up the response. Settlements
        of one event-loop turn share one task."""
        self._queued.append((reservation, usage))
        if len(self._queued) == 1:
            task = asyncio.get_running_loop().create_task(self._settle_queued())
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle_queued(self) -> None:
        queued, self._queued = self._queued, []
        await asyncio.gather(*(self._adjust(r, u, forwarded=True) for r, u in queued))

    async def _adjust(self, reservation: Reservation, usage: Usage | None, *, forwarded: bool) -> None:
        """Tokens are charged as used (nothing when no usage came back); a forwarded request counts as one."""
        for backend, held in reservation.held:
            adjustments = []
            for h in held:
                if h.limit.requests is not None:
                    actual = h.reserved if forwarded else 0
                elif usage is None:
                    actual = 0
                else:
                    actual = _units(h.limit, usage.input_tokens, usage.output_tokens)
                if actual != h.reserved:
                    adjustments.append((h.key, actual - h.reserved, h.period))
            if not adjustments:
                continue
            try:
                await backend.adjust(adjustments)
            except BackendUnavailable:
                log.debug("settlement skipped: limit state unreachable")

    async def drain(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _headers(
    token_state: tuple[int, int, float] | None, request_state: tuple[int, int, float] | None
) -> dict[str, str]:
    headers = {}
    for suffix, state in (("tokens", token_state), ("requests", request_state)):
        if state is not None:
            amount, remaining, reset = state
            headers[f"x-ratelimit-limit-{suffix}"] = str(amount)
            headers[f"x-ratelimit-remaining-{suffix}"] = str(remaining)
            headers[f"x-ratelimit-reset-{suffix}"] = _format_reset(reset)
    return headers


def facts_for(
    consumer: str,
    key_hash: str,
    route: str,
    model: str,
    source_ip: str,
    headers: Mapping[str, str],
    body: Mapping[str, object],
    *,
    generates: bool = True,
) -> RequestFacts:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) if generates else 0
    return RequestFacts(
        consumer=consumer,
        key_hash=key_hash,
        route=route,
        model=model,
        source_ip=source_ip,
        headers=headers,
        input_estimate=estimate_input_tokens(body),
        output_estimate=max_tokens if isinstance(max_tokens, int) else None,
    )
