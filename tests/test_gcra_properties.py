"""The Lua scripts and gcra.py agree: random sequences of reservations and settlements, hostile values included,
get the same decisions from Redis as from the in-process backend."""

from __future__ import annotations

import asyncio
import itertools

from conftest import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tollway_dataplane.ratelimit.backends import MemoryBackend, RedisBackend
from tollway_dataplane.ratelimit.gcra import LimitSpec
from tollway_dataplane.redisconn import RedisOptions

# Long windows: the microseconds between the two backends' calls refill far less than one unit.
WINDOW = 30 * 86400.0
hostile = st.sampled_from([-(10**18), -1, 0, 10**15, 2**62])
costs = st.one_of(st.integers(min_value=0, max_value=120), hostile)
deltas = st.one_of(st.integers(min_value=-120, max_value=120), hostile)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.lists(costs, min_size=1, max_size=3)),
        st.tuples(st.just("adjust"), st.lists(deltas, min_size=1, max_size=3)),
    ),
    min_size=1,
    max_size=12,
)
AMOUNTS = (100, 7, 1000)
_runs = itertools.count()


async def _play(backend: MemoryBackend | RedisBackend, prefix: str, ops: list[tuple[str, list[int]]]) -> list[object]:
    seen: list[object] = []
    for kind, values in ops:
        if kind == "reserve":
            specs = tuple(LimitSpec(f"{prefix}:{i}", AMOUNTS[i], WINDOW, cost) for i, cost in enumerate(values))
            decision = await backend.reserve(specs)
            seen.append((decision.allowed, [s.remaining for s in decision.states]))
        else:
            await backend.adjust([(f"{prefix}:{i}", delta, WINDOW / AMOUNTS[i]) for i, delta in enumerate(values)])
    return seen


def _agree(memory: list[object], redis: list[object]) -> bool:
    for (allowed_m, remaining_m), (allowed_r, remaining_r) in zip(memory, redis, strict=True):  # type: ignore[misc]
        if allowed_m != allowed_r or any(abs(a - b) > 1 for a, b in zip(remaining_m, remaining_r, strict=True)):
            return False
    return True


def test_lua_matches_gcra(redis_server: RedisServer) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(ops=operations)
    def check(ops: list[tuple[str, list[int]]]) -> None:
        async def both() -> tuple[list[object], list[object]]:
            prefix = f"tollway:{{p{next(_runs)}}}"
            redis = RedisBackend(RedisOptions(redis_server.url))
            try:
                return await _play(MemoryBackend(), prefix, ops), await _play(redis, prefix, ops)
            finally:
                await redis.close()

        memory, redis = asyncio.run(both())
        assert _agree(memory, redis), (ops, memory, redis)

    check()
