"""Where limit state lives: Redis (shared by every replica) or this process (one replica, `make run`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from string import Template
from typing import Any, Protocol

from redis.exceptions import RedisError

from ..redisconn import Outage, RedisClient, RedisOptions, TurnPipeline, Unavailable, connect, reconnector
from .gcra import MAX_AHEAD, MAX_UNITS, Decision, LimitSpec, LimitState, clamp_cost, decide, settle

log = logging.getLogger("tollway.ratelimit")


class BackendUnavailable(Exception):
    """The shared state cannot be reached; the limit's failurePolicy decides what happens."""


class ScriptFailed(Exception):
    """The state store refused one call (an error reply). Only that request is affected: not an outage."""


class LimitBackend(Protocol):
    async def reserve(self, specs: tuple[LimitSpec, ...]) -> Decision: ...

    async def adjust(self, adjustments: list[tuple[str, int, float]], *, waited_on: bool = True) -> None:
        """(key, delta units, period) for each limit to settle; `waited_on` False when no answer waits on it
        (a settlement after the answer), so a shared store may send it with its next round trip."""
        ...

    async def close(self) -> None: ...


class MemoryBackend:
    """Same semantics as Redis for a single process. Entries expire once their budget is full again."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._next_sweep = 0.0

    def _get(self, key: str, now: float) -> float | None:
        tat = self._tats.get(key)
        return tat if tat is not None and tat > now else None

    async def reserve(self, specs: tuple[LimitSpec, ...]) -> Decision:
        now = time.time()
        decision, new_tats = decide(specs, [self._get(s.key, now) for s in specs], now)
        if decision.allowed:
            for spec, tat in zip(specs, new_tats, strict=True):
                self._tats[spec.key] = tat
        self._sweep(now)
        return decision

    async def adjust(self, adjustments: list[tuple[str, int, float]], *, waited_on: bool = True) -> None:
        now = time.time()
        for key, delta, period in adjustments:
            self._tats[key] = settle(self._get(key, now), delta, period, now)

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + 10.0
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]

    async def close(self) -> None:
        return None


def _bounded(script: str) -> str:
    """The script with gcra.py's bounds written in, so Lua and Python clamp alike."""
    return Template(script).substitute(max_ahead=repr(MAX_AHEAD), max_units=repr(MAX_UNITS))


# KEYS: one per limit. ARGV: n, then per limit: amount, window, cost. All keys of one call share a hash tag, so
# they live in one Redis Cluster slot and the decision stays atomic there. Returns {allowed, retry_after_ms,
# remaining_1, reset_ms_1, ...}. The bounds repeat gcra.py's (clamp_cost, MAX_AHEAD), so no argument and no
# stored value can make a command fail: a stored value that is not a number counts as an empty budget.
RESERVE_LUA = _bounded("""
local MAX_AHEAD = $max_ahead
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local tats, news, periods, windows = {}, {}, {}, {}
local retry = 0
for i = 1, n do
  local amount = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local period = window / amount
  if cost < 0 then cost = 0 end
  if cost > amount then cost = amount end
  local tat = tonumber(redis.call('GET', KEYS[i])) or 0
  if tat < now then tat = now end
  if tat > now + MAX_AHEAD then tat = now + MAX_AHEAD end
  tats[i], periods[i], windows[i] = tat, period, window
  news[i] = tat + cost * period
  if news[i] - now > window + 1e-9 then
    retry = math.max(retry, news[i] - now - window)
  end
end
local out = {retry == 0 and 1 or 0, math.ceil(retry * 1000)}
for i = 1, n do
  local period, window = periods[i], windows[i]
  local tat = tats[i]
  if retry == 0 then
    tat = news[i]
    redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  end
  local remaining = math.floor((window - (tat - now)) / period + 1e-9)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil((tat - now) * 1000)
end
return out
""")

# KEYS: one per limit. ARGV: per limit: delta units, period. Bounded as gcra.settle is.
ADJUST_LUA = _bounded("""
local MAX_AHEAD, MAX_UNITS = $max_ahead, $max_units
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local delta = tonumber(ARGV[1 + (i - 1) * 2])
  local period = tonumber(ARGV[2 + (i - 1) * 2])
  if delta > MAX_UNITS then delta = MAX_UNITS end
  if delta < -MAX_UNITS then delta = -MAX_UNITS end
  local tat = tonumber(redis.call('GET', KEYS[i])) or 0
  if tat < now then tat = now end
  tat = tat + delta * period
  if tat > now + MAX_AHEAD then tat = now + MAX_AHEAD end
  if tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  end
end
return 1
""")


class RedisBackend:
    """One round trip per decision: a Lua script loaded once, then called by its SHA through redis-py, on any
    topology `redisconn` can reach (a server, TLS, Sentinel, Cluster).

    Outages (unreachable, timeout, failover in progress) raise BackendUnavailable and the limit's failurePolicy
    decides; the shared `Outage` guard lets one call at a time probe a server that is down and answers the
    others at once instead of making each request wait. An error reply caused by one call's data raises
    ScriptFailed: that request's problem, never an outage.
    """

    def __init__(self, options: RedisOptions, retry_interval: float = 0.1, client: RedisClient | None = None):
        self.options = options
        self._owns_client = client is None
        self._client = client if client is not None else connect(options)  # else the gateway's shared client
        self._outage = Outage("rate limits", retry_interval, reconnect=reconnector(self._client))
        self._pipeline = TurnPipeline(self._client, self._outage)  # decisions of one loop turn leave together
        self._reserve = self._pipeline.script(RESERVE_LUA)
        self._adjust = self._pipeline.script(ADJUST_LUA)
        self._settle = self._pipeline.script(ADJUST_LUA, deferred=True)

    async def _run(
        self, script: Callable[[list[str], list[Any]], Awaitable[Any]], keys: list[str], args: list[Any]
    ) -> Any:
        try:
            return await script(keys, args)
        except Unavailable as exc:
            raise BackendUnavailable(str(exc)) from None
        except RedisError as exc:
            raise ScriptFailed(f"{type(exc).__name__}: {exc}") from None

    async def reserve(self, specs: tuple[LimitSpec, ...]) -> Decision:
        args: list[object] = [len(specs)]
        for spec in specs:
            args += [spec.amount, repr(spec.window), clamp_cost(spec.cost, spec.amount)]
        values = await self._run(self._reserve, [s.key for s in specs], args)
        states = tuple(
            LimitState(remaining=values[2 + 2 * i], reset=values[3 + 2 * i] / 1000) for i in range(len(specs))
        )
        return Decision(allowed=values[0] == 1, retry_after=values[1] / 1000, states=states)

    async def adjust(self, adjustments: list[tuple[str, int, float]], *, waited_on: bool = True) -> None:
        args: list[object] = []
        for _, delta, period in adjustments:
            args += [min(max(delta, -MAX_UNITS), MAX_UNITS), repr(period)]
        script = self._adjust if waited_on else self._settle
        await self._run(script, [key for key, _, _ in adjustments], args)

    async def close(self) -> None:
        await self._pipeline.drain()
        if self._owns_client:
            await self._client.aclose()


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
