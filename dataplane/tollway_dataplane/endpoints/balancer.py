"""One pool's endpoints in one config snapshot, and the pick each attempt makes among them.

Built once per snapshot for each pool with `endpoints`; the state it reads (scrapes, in-flight counts, failures)
is the process-wide `EndpointRegistry`'s, so a reload changes the list but not what is known about each server.
A pick either names a member (its base URL is where the attempt goes) or refuses: `no-endpoint` when none may
be used at all (stale metrics, cooling down after a failure, already tried, none configured) and `saturated`
when the usable ones all have `maxQueue` requests queued. The executor treats a refusal like a pool whose keys
are all benched, and saturation like a 429: the rule's next backend or fallback serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tollway_contract.model import Endpoints

from . import pickers
from .prefix import prefix_key
from .state import EndpointRegistry, EndpointState, Estimate

if TYPE_CHECKING:
    from ..call import Call
    from ..pools import PoolRuntime


@dataclass(frozen=True, slots=True, eq=False)
class Member:
    """One endpoint of one pool: where an attempt goes, and the pool as the translators see it there."""

    url: str
    state: EndpointState
    target: PoolRuntime  # the pool with `config.base_url` set to `url`

    @property
    def address(self) -> str:
        return self.state.address


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "no-endpoint" | "saturated"
    retry_after: float  # seconds until it is worth asking again


class EndpointSet:
    def __init__(
        self, pool: str, config: Endpoints, registry: EndpointRegistry, view: Callable[[str], PoolRuntime]
    ) -> None:
        self.pool = pool
        self.config = config
        self._registry = registry
        self.members = tuple(Member(url, registry.state(url), view(url)) for url in config.urls)
        self.interval = config.metrics.interval if config.metrics is not None else None
        self._ring = pickers.Ring(config.urls) if config.picker == "prefix-affinity" else None

    def usable(self, state: EndpointState, now: float) -> bool:
        """Fresh metrics (when scraped at all) and not cooling down after a failure."""
        if state.benched_until > now:
            return False
        return self.interval is None or not state.stale(self.interval, now)

    def open(self, estimate: Estimate) -> bool:
        """Below `maxQueue`: may take one more request."""
        limit = self.config.max_queue
        return limit is None or estimate.queue < limit

    def pick(self, call: Call, tried: Collection[Member] = (), now: float | None = None) -> Member | Refusal:
        now = time.monotonic() if now is None else now
        fit = [(i, m) for i, m in enumerate(self.members) if m not in tried and self.usable(m.state, now)]
        kv_per_request = _kv_per_request(m.state for _, m in fit)
        usable = [(i, m, m.state.estimate(kv_per_request)) for i, m in fit]
        if not usable:
            return Refusal("no-endpoint", self._wait(now))
        candidates = [(i, m, e) for i, m, e in usable if self.open(e)]
        if not candidates:
            return Refusal("saturated", self.interval or 1.0)
        chosen = self._choose(call, usable, candidates)
        picks = chosen.state.picks
        picks[self.pool] = picks.get(self.pool, 0) + 1
        return chosen

    def _choose(
        self,
        call: Call,
        usable: list[tuple[int, Member, Estimate]],
        candidates: list[tuple[int, Member, Estimate]],
    ) -> Member:
        picker = self.config.picker
        if picker == "prefix-affinity" and self._ring is not None:
            key = prefix_key(call, self.config.prefix_chars)
            total = sum(e.outstanding for _, _, e in usable)
            index = pickers.bounded(self._ring, key, {i: e for i, _, e in candidates}, total, len(usable))
            if index is not None:
                return self.members[index]
        start = self._registry.next_cursor(self.pool)
        if picker == "round-robin":
            open_ = {i for i, _, _ in candidates}
            n = len(self.members)
            return next(self.members[(start + k) % n] for k in range(n) if (start + k) % n in open_)
        return pickers.least_load([(m, e) for _, m, e in candidates], start)

    def bench(self, member: Member, now: float | None = None) -> None:
        """Skip the endpoint for the cooldown after a request to it failed (passive health)."""
        now = time.monotonic() if now is None else now
        member.state.benched_until = max(member.state.benched_until, now + self.config.cooldown)

    def estimate(self, state: EndpointState) -> Estimate:
        """One endpoint's load estimate, with the pool's KV use per request (for metrics and tests)."""
        return state.estimate(_kv_per_request(m.state for m in self.members))

    def _wait(self, now: float) -> float:
        benched = [m.state.benched_until - now for m in self.members if m.state.benched_until > now]
        return min(benched) if benched else (self.interval or 1.0)


def _kv_per_request(states: Iterable[EndpointState]) -> float:
    """The pool's KV-cache use per running request at the last scrapes (0 when nothing runs anywhere)."""
    kv = running = 0.0
    for state in states:
        if state.load is not None:
            kv += state.load.kv_cache
            running += state.load.running
    return kv / running if running else 0.0
