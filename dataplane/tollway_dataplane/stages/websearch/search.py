"""Running the engines: every engine for every query, in parallel, each under its own timeout.

A failing engine is skipped and counted (metrics by route, engine and status; the access log per engine);
the caller's request never waits longer than the slowest engine's timeout. What the engines found is merged
by `results.merge`; whether anything was found at all (`any_ok`) is what the failure policy looks at.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ... import metrics
from .engines import Engine, EngineError, Location, Query
from .results import SearchResult, merge

log = logging.getLogger("tollway.search")


@dataclass(slots=True)
class Call:
    engine: Engine
    query: str
    status: str = "ok"  # ok | error | timeout | unconfigured
    results: list[SearchResult] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(slots=True)
class Outcome:
    results: list[SearchResult]
    calls: list[Call]

    @property
    def any_ok(self) -> bool:
        return any(c.status == "ok" for c in self.calls)

    def report(self) -> dict[str, Any]:
        """Per engine, for the access log: the worst status of its calls, results found, the slowest call."""
        by_engine: dict[str, dict[str, Any]] = {}
        for c in self.calls:
            entry = by_engine.setdefault(c.engine.name, {"status": "ok", "results": 0, "ms": 0.0})
            if c.status != "ok":
                entry["status"] = c.status
            entry["results"] += len(c.results)
            entry["ms"] = max(entry["ms"], round(c.seconds * 1000, 1))
        return by_engine


async def search_all(
    engines: Sequence[Engine],
    session: aiohttp.ClientSession | None,
    queries: Sequence[str],
    count: int,
    location: Location | None,
    route: str,
) -> Outcome:
    calls = [Call(engine, q) for q in queries for engine in engines]
    await asyncio.gather(*(_run(c, session, Query(c.query, count, location), route) for c in calls))
    # Queries in order, engines in config order within each: the first query's best results lead.
    return Outcome(merge((c.results for c in calls), count), calls)


async def _run(call: Call, session: aiohttp.ClientSession | None, query: Query, route: str) -> None:
    engine = call.engine
    reason = ""
    started = time.perf_counter()
    try:
        if session is None:
            raise EngineError("the gateway has no HTTP session yet", "unconfigured")
        async with asyncio.timeout(engine.timeout):
            call.results = await engine.search(session, query)
    except TimeoutError:
        call.status = "timeout"
    except EngineError as exc:
        call.status = exc.status
        reason = str(exc)
    except Exception as exc:  # a bug reading one engine's answer must not fail the request
        call.status = "error"
        reason = f"{type(exc).__name__}: {exc}"[:200]
    call.seconds = time.perf_counter() - started
    metrics.SEARCH_REQUESTS.labels(route, engine.name, call.status).inc()
    metrics.SEARCH_SECONDS.labels(route, engine.name).observe(call.seconds)
    if call.status != "ok":
        detail = reason if call.status in ("error", "unconfigured") else f"no answer within {engine.timeout:g}s"
        log.warning("search engine failed", extra={"engine": engine.name, "status": call.status, "reason": detail})
