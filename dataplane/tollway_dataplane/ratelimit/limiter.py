"""The limit stage of the request path: reserve an estimate before forwarding, settle the real usage after.

Reserving first is what makes limits hold under bursts: fifty concurrent requests cannot all pass a check
that each of them would pass alone, because each one's estimate is already counted when the next is decided.

Money budgets work the same way in micro-dollars: the estimate is priced at the rule's ceiling (the dearest
backend or fallback the request may reach), and settlement charges the real cost of the pool and model that
served. Every value derived from a request is clamped before it reaches a backend (see gcra.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tollway_contract.model import USD_UNITS, Limit, Price, RateLimit

from ..errors import GatewayError
from ..pricing import micro_usd, reserve_micro_usd
from ..usage import Usage, estimate_input_tokens
from .backends import BackendUnavailable, LimitBackend, ScriptFailed, ceil_seconds
from .gcra import Decision, LimitSpec, clamp_cost, clamp_delta

log = logging.getLogger("tollway.ratelimit")


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
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
    price: Price | None = None  # the ceiling price of the request's rule and model (money budgets)


@dataclass(slots=True)
class Held:
    """One limit's share of a reservation, to be settled when the real usage is known."""

    key: str
    limit: Limit
    reserved: int
    period: float
    price: Price | None = None  # money budgets: the ceiling, used when the served model has no price
    tag: str = ""  # the decision's hash tag: keys with the same tag live in one Redis Cluster slot


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


def _kind(limit: Limit) -> str:
    """Which header family a limit reports in: tokens, requests or usd."""
    if limit.usd is not None:
        return "usd"
    return "tokens" if limit.tokens is not None else "requests"


def _reserve_units(limit: Limit, facts: RequestFacts, output: int) -> int:
    if limit.usd is None:
        return _units(limit, facts.input_estimate, output)
    if facts.price is None:
        return limit.amount  # no price known for what may serve: admitted only with a full budget
    return reserve_micro_usd(facts.input_estimate, output, facts.price)


def _settled_units(held: Held, usage: Usage | None, cost: float | None, forwarded: bool) -> int:
    """What a held share really used: a forwarded request counts as one; tokens and money as reported."""
    limit = held.limit
    if limit.requests is not None:
        return held.reserved if forwarded else 0
    if usage is None:
        return 0
    if limit.usd is None:
        return _units(limit, usage.input_tokens, usage.output_tokens)
    if cost is not None:
        return micro_usd(cost)
    if held.price is not None:  # served by a model without a price: the ceiling stands in
        return reserve_micro_usd(usage.input_tokens, usage.output_tokens, held.price)
    return held.reserved


def _delta(held: Held, usage: Usage | None, cost: float | None, *, forwarded: bool) -> int:
    """What settling a held share changes: its real use minus what was reserved, clamped."""
    return clamp_delta(_settled_units(held, usage, cost, forwarded) - held.reserved, held.limit.amount)


_State = tuple[int, int, float]  # (amount, remaining, reset seconds) of the tightest limit of a kind


class RateLimiter:
    def __init__(self, backend: LimitBackend, *, on_limited: Callable[[str, str], None] | None = None):
        self.backend = backend
        self._on_limited = on_limited  # (limit name, consumer): counts refusals without importing metrics
        self._settling: set[asyncio.Task[None]] = set()
        self._queued: list[tuple[Reservation, Usage | None, float | None]] = []

    async def reserve(self, limits: tuple[RateLimit, ...], facts: RequestFacts) -> Reservation:
        """Reserve for every applicable limit; raise 429 when one does not fit (503: closed and unreachable)."""
        reservation = Reservation()
        tightest: dict[str, _State] = {}  # per kind (tokens, requests, usd): the limit with the least remaining
        for rate_limit in limits:
            values = tuple(_key_value(part, facts) for part in rate_limit.key)
            chosen = rate_limit.limits
            for override in rate_limit.overrides:
                if all(values[rate_limit.key.index(p)] == v for p, v in override.match if p in rate_limit.key):
                    chosen = override.limits
                    break
            output = facts.output_estimate if facts.output_estimate is not None else rate_limit.default_max_tokens
            output = max(0, output)  # a negative max_tokens must not turn a reservation into a refund
            key_text = "|".join(values)
            if len(key_text) > 96:
                key_text = hashlib.sha256(key_text.encode()).hexdigest()[:32]
            tag = f"{{{rate_limit.name}|{key_text}}}"  # one hash tag: every key of this decision in one slot
            held, specs = [], []
            for limit in chosen:
                amount = limit.amount
                cost = clamp_cost(_reserve_units(limit, facts, output), amount)
                kind = f"t-{limit.count}" if limit.tokens is not None else ("usd" if limit.usd is not None else "r")
                spec = LimitSpec(
                    key=f"tollway:{tag}:{kind}:{limit.window:g}", amount=amount, window=limit.window, cost=cost
                )
                specs.append(spec)
                price = facts.price if limit.usd is not None else None
                held.append(Held(spec.key, limit, cost, spec.period, price, tag))
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
            except ScriptFailed as exc:
                # Refused for this request alone: the limit keeps applying to everyone else.
                log.error("limit decision failed", extra={"limit": rate_limit.name, "error": str(exc)})
                await self.release(reservation)
                raise GatewayError(
                    503, "The rate limit could not be decided for this request.", "rate_limiter_error"
                ) from None
            for h, state in zip(held, decision.states, strict=True):
                kind = _kind(h.limit)
                current = tightest.get(kind)
                if current is None or state.remaining < current[1]:
                    tightest[kind] = (h.limit.amount, state.remaining, state.reset)
            if not decision.allowed:
                await self.release(reservation)
                raise self._limited(rate_limit, facts, decision, held, tightest)
            reservation.held.append((self.backend, held))
        reservation.headers = _headers(tightest)
        return reservation

    def _limited(
        self,
        rate_limit: RateLimit,
        facts: RequestFacts,
        decision: Decision,
        held: list[Held],
        tightest: dict[str, _State],
    ) -> GatewayError:
        if self._on_limited is not None:
            self._on_limited(rate_limit.name, facts.consumer)
        headers = _headers(tightest)
        headers["Retry-After"] = str(ceil_seconds(decision.retry_after))
        spent = [h.limit for h, state in zip(held, decision.states, strict=True) if h.reserved > state.remaining]
        money = [lim for lim in spent if lim.usd is not None]
        if not money:
            return GatewayError(429, rate_limit.message, "rate_limit_exceeded", headers=headers)
        budget = money[0]
        message = (
            f"{rate_limit.message} The budget of {_format_usd(budget.amount)} USD per {_format_window(budget.window)}"
            f" is spent; it renews enough for this request in {_format_reset(decision.retry_after)}."
        )
        return GatewayError(429, message, "budget_exceeded", headers=headers)

    async def release(self, reservation: Reservation) -> None:
        """Give back everything reserved (the request never reached a provider)."""
        await self._adjust(reservation, None, forwarded=False)

    def settle_soon(self, reservation: Reservation, usage: Usage | None, cost: float | None = None) -> None:
        """Charge the real usage (refund or top up the estimate) without holding up the response; `cost` is
        the request's price in USD when the serving pool prices its model. Settlements of one event-loop turn
        share one task, and their changes to one key are summed into one (one script call per hash tag): a
        busy consumer's settlements cost the store one call a turn, not one per request."""
        self._queued.append((reservation, usage, cost))
        if len(self._queued) == 1:
            task = asyncio.get_running_loop().create_task(self._settle_queued())
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)

    async def _settle_queued(self) -> None:
        queued, self._queued = self._queued, []
        # (backend, hash tag) -> key -> [summed delta, period]. The order of one turn's settlements is arbitrary
        # anyway; their sum is what the requests used together.
        merged: dict[tuple[LimitBackend, str], dict[str, list[Any]]] = {}
        for reservation, usage, cost in queued:
            for backend, held in reservation.held:
                for h in held:
                    delta = _delta(h, usage, cost, forwarded=True)
                    if delta:
                        group = merged.setdefault((backend, h.tag), {})
                        known = group.get(h.key)
                        if known is None:
                            group[h.key] = [delta, h.period]
                        else:
                            known[0] += delta
        sends = [
            _send(backend, [(key, delta, period) for key, (delta, period) in group.items() if delta], False)
            for (backend, _), group in merged.items()
        ]
        if len(sends) == 1:
            await sends[0]  # the usual turn: one consumer's limit (gather would make a task for it)
        elif sends:
            await asyncio.gather(*sends)

    async def _adjust(
        self, reservation: Reservation, usage: Usage | None, *, forwarded: bool, cost: float | None = None
    ) -> None:
        """Tokens and money are charged as used (nothing when no usage came back); a forwarded request counts
        as one."""
        for backend, held in reservation.held:
            adjustments = []
            for h in held:
                delta = _delta(h, usage, cost, forwarded=forwarded)
                if delta:
                    adjustments.append((h.key, delta, h.period))
            # A settlement (the answer is out) rides with the next decision's round trip; a release (the request
            # is refused) is sent at once, as its answer waits on it.
            await _send(backend, adjustments, not forwarded)

    async def drain(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


async def _send(backend: LimitBackend, adjustments: list[tuple[str, int, float]], waited_on: bool) -> None:
    if not adjustments:
        return
    try:
        await backend.adjust(adjustments, waited_on=waited_on)
    except BackendUnavailable:
        log.debug("settlement skipped: limit state unreachable")
    except ScriptFailed as exc:
        log.error("settlement failed", extra={"error": str(exc)})


def _format_usd(micro: int) -> str:
    """Micro-dollars as a plain decimal: 50, 49.98, 0.000123."""
    text = f"{micro / USD_UNITS:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def _format_window(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _headers(tightest: dict[str, _State]) -> dict[str, str]:
    headers = {}
    for suffix in ("tokens", "requests", "usd"):
        state = tightest.get(suffix)
        if state is not None:
            amount, remaining, reset = state
            shown = _format_usd if suffix == "usd" else str
            headers[f"x-ratelimit-limit-{suffix}"] = shown(amount)
            headers[f"x-ratelimit-remaining-{suffix}"] = shown(remaining)
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
    price: Price | None = None,
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
        price=price,
    )
