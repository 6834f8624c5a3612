#!/usr/bin/env python3
"""Limiter decision latency against one Redis: `python bench/decisions.py PORT`, run with PYTHONPATH naming the
source tree to measure (the current one, or the baseline that bench/run.py unpacks). Prints one JSON line.

Sequential: one decision at a time (what one request adds). Concurrent: 64 decisions in flight at once, the way
a busy gateway issues them (a pipelined client and a pooled one behave very differently here).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any


def _backend(port: int) -> Any:
    from tollway_dataplane.ratelimit import backends

    url = f"redis://127.0.0.1:{port}/0"
    if hasattr(backends, "RespClient"):  # the baseline: the hand-written client took a URL
        return backends.RedisBackend(url), "resp"
    from tollway_dataplane.redisconn import RedisOptions

    return backends.RedisBackend(RedisOptions(url)), "redis-py"


async def main(port: int, count: int) -> dict[str, Any]:
    from tollway_dataplane.ratelimit.gcra import LimitSpec

    backend, client = _backend(port)
    specs = (LimitSpec("tollway:{bench}:t", 10**9, 60.0, 10), LimitSpec("tollway:{bench}:r", 10**9, 60.0, 1))
    try:
        for _ in range(200):  # warm-up: connections, script load
            await backend.reserve(specs)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await backend.reserve(specs)
            samples.append(time.perf_counter() - started)
        samples.sort()
        started = time.perf_counter()
        done = 0
        while time.perf_counter() - started < 3.0:
            await asyncio.gather(*(backend.reserve(specs) for _ in range(64)))
            done += 64
        concurrent = done / (time.perf_counter() - started)
    finally:
        await backend.close()
    import tollway_dataplane.ratelimit.backends as module

    return {
        "client": client,
        "source": module.__file__,
        "p50_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "decisions_per_s_at_64_in_flight": round(concurrent),
    }


if __name__ == "__main__":
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(json.dumps(runner(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3000))))
