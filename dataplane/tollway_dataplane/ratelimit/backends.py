"""Where limit state lives: Redis (shared by every replica) or this process (one replica, `make run`)."""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any, Protocol

from .gcra import Decision, LimitSpec, LimitState, decide, settle
from .resp import RedisError, RespClient

log = logging.getLogger("tollway.ratelimit")


class BackendUnavailable(Exception):
    """The shared state cannot be reached; the limit's failurePolicy decides what happens."""


class LimitBackend(Protocol):
    async def reserve(self, specs: tuple[LimitSpec, ...]) -> Decision: ...

    async def adjust(self, adjustments: list[tuple[str, int, float]]) -> None:
        """(key, delta units, period) for each limit to settle."""
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

    async def adjust(self, adjustments: list[tuple[str, int, float]]) -> None:
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


# KEYS: one per limit. ARGV: n, then per limit: period, window, cost. All keys of one call share a hash tag,
# so this works on Redis Cluster. Returns {allowed, retry_after_ms, remaining_1, reset_ms_1, ...}.
RESERVE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local tats, news = {}, {}
local retry = 0
for i = 1, n do
  local period = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = tonumber(ARGV[4 + (i - 1) * 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i] = tat
  news[i] = tat + cost * period
  if news[i] - now > window + 1e-9 then
    retry = math.max(retry, news[i] - now - window)
  end
end
local out = {retry == 0 and 1 or 0, math.ceil(retry * 1000)}
for i = 1, n do
  local period = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
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
"""

# KEYS: one per limit. ARGV: per limit: delta units, period.
ADJUST_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local delta = tonumber(ARGV[1 + (i - 1) * 2])
  local period = tonumber(ARGV[2 + (i - 1) * 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + delta * period
  if tat <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
  end
end
return 1
"""


RESERVE_SHA = hashlib.sha1(RESERVE_LUA.encode()).hexdigest()
ADJUST_SHA = hashlib.sha1(ADJUST_LUA.encode()).hexdigest()


class RedisBackend:
    """One round trip per decision: a Lua script loaded once, then called by its SHA on a pipelined connection.

    A short timeout bounds every call; after a failure the backend answers "unavailable" at once for a moment
    instead of making each request wait, and the outage and the recovery are logged once each.
    """

    def __init__(self, url: str, password: str | None = None, timeout: float = 0.5, retry_interval: float = 1.0):
        self._client = RespClient(url, password=password, timeout=timeout)
        self._retry_interval = retry_interval
        self._down_since: float | None = None
        self._retry_at = 0.0

    async def _script(self, script: str, sha: str, keys: list[str], args: list[object]) -> Any:
        now = time.monotonic()
        if self._down_since is not None and now < self._retry_at:
            raise BackendUnavailable("redis is unavailable")
        try:
            try:
                result = await self._client.execute("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            except RedisError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                await self._client.execute("SCRIPT", "LOAD", script)  # first use, or Redis restarted
                result = await self._client.execute("EVALSHA", sha, len(keys), *keys, *args)  # type: ignore[arg-type]
        except (RedisError, OSError, TimeoutError) as exc:
            if self._down_since is None:
                self._down_since = now
                log.error(
                    "redis unavailable; limits follow their failurePolicy until it returns",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            self._retry_at = now + self._retry_interval
            raise BackendUnavailable(str(exc)) from None
        if self._down_since is not None:
            log.warning(
                "redis reachable again; limiting resumed", extra={"outage_seconds": round(now - self._down_since, 3)}
            )
            self._down_since = None
        return result

    async def reserve(self, specs: tuple[LimitSpec, ...]) -> Decision:
        args: list[object] = [len(specs)]
        for spec in specs:
            args += [repr(spec.period), repr(spec.window), spec.cost]
        values = await self._script(RESERVE_LUA, RESERVE_SHA, [s.key for s in specs], args)
        states = tuple(
            LimitState(remaining=values[2 + 2 * i], reset=values[3 + 2 * i] / 1000) for i in range(len(specs))
        )
        return Decision(allowed=values[0] == 1, retry_after=values[1] / 1000, states=states)

    async def adjust(self, adjustments: list[tuple[str, int, float]]) -> None:
        args: list[object] = []
        for _, delta, period in adjustments:
            args += [delta, repr(period)]
        await self._script(ADJUST_LUA, ADJUST_SHA, [key for key, _, _ in adjustments], args)

    async def close(self) -> None:
        await self._client.close()


def ceil_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))
