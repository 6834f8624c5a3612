"""Provider key pools: which key serves the next attempt, and which keys are benched.

Key state (cooldowns, in-flight counts, rotation position) lives in a registry that outlives config snapshots,
keyed by the key's stable id, so a reload neither forgets a benched key nor restarts the rotation. A pool with
`endpoints` (several model servers) also has an `EndpointSet`, whose state lives in the same registry.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from dataclasses import dataclass

from tollway_contract.model import Pool, Price

from .endpoints.balancer import EndpointSet
from .endpoints.state import EndpointRegistry
from .pricing import price_for


@dataclass(slots=True)
class KeyState:
    benched_until: float = 0.0
    in_flight: int = 0


@dataclass(frozen=True, slots=True)
class PoolKeyRuntime:
    """One usable key of a pool. `index` is its position in the pool (safe to log); `value` never is."""

    id: str
    index: int
    value: str
    state: KeyState

    def __repr__(self) -> str:
        return f"PoolKeyRuntime(id={self.id!r}, index={self.index})"


class KeyStateRegistry:
    """Shared by every snapshot of one process."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyState] = {}
        self._cursors: dict[str, int] = {}
        self.endpoints = EndpointRegistry()  # model servers of pools with endpoints, by URL

    def key(self, key_id: str) -> KeyState:
        state = self._keys.get(key_id)
        if state is None:
            state = self._keys[key_id] = KeyState()
        return state

    def next_cursor(self, pool: str) -> int:
        cursor = self._cursors.get(pool, 0)
        self._cursors[pool] = cursor + 1
        return cursor

    def forget_except(self, live_ids: set[str]) -> None:
        """Drop state of keys no config names any more (keeps the registry from growing forever)."""
        for key_id in [k for k, s in self._keys.items() if k not in live_ids and s.in_flight == 0]:
            del self._keys[key_id]


class PoolRuntime:
    def __init__(self, pool: Pool, key_values: dict[str, str], registry: KeyStateRegistry):
        self.config = pool
        self.name = pool.name
        self._registry = registry
        self.keys: tuple[PoolKeyRuntime, ...] = tuple(
            PoolKeyRuntime(id=k.id, index=i, value=key_values[k.id], state=registry.key(k.id))
            for i, k in enumerate(pool.keys)
            if k.id in key_values
        )
        self.missing_keys = len(pool.keys) - len(self.keys)
        self._prices: dict[str, Price | None] = {}
        self.endpoints: EndpointSet | None = None
        if pool.endpoints is not None:
            self.endpoints = EndpointSet(pool.name, pool.endpoints, registry.endpoints, self.at)

    def at(self, base_url: str) -> PoolRuntime:
        """This pool as seen at one of its endpoints: the same keys, key state and settings, with
        `config.base_url` set to the endpoint's base URL, so every translator builds the endpoint's URL the way
        it builds any pool's. Made once per endpoint per snapshot (by the EndpointSet), never per request."""
        view = copy.copy(self)
        view.config = dataclasses.replace(self.config, base_url=base_url)
        return view

    def price(self, model: str) -> Price | None:
        if model not in self._prices:
            if len(self._prices) > 1000:
                self._prices.clear()
            self._prices[model] = price_for(self.config.pricing, model)
        return self._prices[model]

    @property
    def keyless(self) -> bool:
        """A pool that declares no keys (a self-hosted server without auth)."""
        return not self.config.keys

    def key_order(self, now: float | None = None) -> list[PoolKeyRuntime]:
        """The pool's available keys in the order attempts should use them; benched keys are left out."""
        now = time.monotonic() if now is None else now
        available = [k for k in self.keys if k.state.benched_until <= now]
        if len(available) <= 1:
            return available
        selection = self.config.selection
        if selection == "random":
            random.shuffle(available)
            return available
        if selection == "least-in-flight":
            start = self._registry.next_cursor(self.name) % len(available)
            rotated = available[start:] + available[:start]  # rotation breaks ties fairly
            return sorted(rotated, key=lambda k: k.state.in_flight)
        start = self._registry.next_cursor(self.name) % len(available)
        return available[start:] + available[:start]

    def bench(self, key: PoolKeyRuntime, retry_after: float | None, now: float | None = None) -> float:
        """Bench a key for the pool's cooldown, or the provider's Retry-After (capped). Returns the seconds."""
        cooldown = self.config.cooldown
        seconds = min(retry_after, cooldown.max) if retry_after is not None else cooldown.default
        key.state.benched_until = max(key.state.benched_until, (time.monotonic() if now is None else now) + seconds)
        return seconds

    def next_available_in(self, now: float | None = None) -> float:
        """Seconds until the first benched key returns (0 when one is available)."""
        now = time.monotonic() if now is None else now
        if not self.keys:
            return 0.0
        return max(0.0, min(k.state.benched_until for k in self.keys) - now)
