"""GCRA (the generic cell rate algorithm) with variable costs: the arithmetic shared by every backend.

Each limit "A units per window W" keeps one number per key: the theoretical arrival time (TAT). A unit costs
T = W / A seconds; a request of cost c is admitted when max(TAT, now) + c*T - now <= W, and then moves TAT
there. It behaves as a token bucket of size A refilled continuously at A/W per second: a caller may spend the
whole budget at once, then earns it back smoothly. Settling moves TAT by the difference between the real and
the reserved cost (a refund moves it back, never before `now`). The Redis Lua script implements exactly this.

Every number that reaches the arithmetic is bounded here, whatever a request or a provider claims: a cost lies
in [0, amount], a settlement moves TAT by at most MAX_DEBT_WINDOWS windows of debt, and TAT never lies more
than MAX_AHEAD seconds ahead of now (so a stored expiry is always valid). A caller can exhaust its own budget,
never break the state everyone shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_DEBT_WINDOWS = 10  # an overrun is charged as debt of at most this many windows
MAX_AHEAD = 400 * 86400.0  # seconds: the furthest TAT ever stored ahead of now (longest window 30d + debt)
MAX_UNITS = 2**53  # integers beyond this are not exact in Lua's doubles


def clamp_cost(cost: int, amount: int) -> int:
    """What one request may reserve: nothing below zero, never more than the whole budget."""
    return min(max(cost, 0), amount)


def clamp_delta(delta: int, amount: int) -> int:
    """A settlement: refunds at most what a reservation can hold, charges at most MAX_DEBT_WINDOWS budgets."""
    return min(max(delta, -amount), amount * MAX_DEBT_WINDOWS, MAX_UNITS)


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class LimitSpec:
    key: str
    amount: int  # units per window
    window: float  # seconds
    cost: int  # units this request reserves (already capped at `amount`)

    @property
    def period(self) -> float:
        return self.window / self.amount


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class LimitState:
    remaining: int  # units still available after this decision
    reset: float  # seconds until the budget is full again


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds, when not allowed
    states: tuple[LimitState, ...]


def decide(specs: tuple[LimitSpec, ...], tats: list[float | None], now: float) -> tuple[Decision, list[float]]:
    """The decision for all limits at once, and the TATs to store when it is allowed."""
    new_tats = []
    retry_after = 0.0
    for spec, stored in zip(specs, tats, strict=True):
        tat = min(max(stored or now, now), now + MAX_AHEAD)
        new_tat = tat + clamp_cost(spec.cost, spec.amount) * spec.period
        if new_tat - now > spec.window + 1e-9:
            retry_after = max(retry_after, new_tat - now - spec.window)
        new_tats.append(new_tat)
    allowed = retry_after == 0.0
    effective = new_tats if allowed else [min(max(t or now, now), now + MAX_AHEAD) for t in tats]
    states = tuple(
        LimitState(remaining=max(0, math.floor((spec.window - (tat - now)) / spec.period + 1e-9)), reset=tat - now)
        for spec, tat in zip(specs, effective, strict=True)
    )
    return Decision(allowed=allowed, retry_after=retry_after, states=states), new_tats


def settle(stored: float | None, delta: int, period: float, now: float) -> float:
    """The TAT after charging (delta > 0) or refunding (delta < 0) units."""
    delta = min(max(delta, -MAX_UNITS), MAX_UNITS)
    return min(max(max(stored or now, now) + delta * period, now), now + MAX_AHEAD)
