"""One background task per process that scrapes every endpoint's metrics on its pool's interval.

It reads the live snapshot each round (so a reload changes what is scraped within a quarter of a second), keeps
at most one scrape per endpoint in flight, and writes what it learns into the endpoint's state: requests never
wait for a scrape and never trigger one. A scrape that fails (connection refused, a non-200, a body without the
figures) leaves the last good figures in place; after 3 intervals without a good one the pickers skip the
endpoint as stale. The first failure after a success and the recovery are logged once each.

Scrapes go through the gateway's own client session with `Accept-Encoding: identity` (the session hands bodies
over undecoded, and the Prometheus client compresses when asked to) and ask for the classic text format.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp

from .balancer import EndpointSet
from .exposition import ExpositionError, parse_load
from .state import EndpointRegistry, EndpointState, metrics_url

log = logging.getLogger("tollway.endpoints")

MAX_BODY = 8 * 1024 * 1024  # a vLLM exposition is a few hundred KiB; anything far larger is not one
MAX_SLEEP = 0.25  # how long a new snapshot's endpoints may wait for their first scrape
_HEADERS = {"Accept": "text/plain;version=0.0.4", "Accept-Encoding": "identity"}


@dataclass(frozen=True, slots=True)
class Target:
    state: EndpointState
    url: str  # the metrics URL
    format: str
    interval: float


class Scraper:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint_sets: Callable[[], Iterable[EndpointSet]],
        registry: EndpointRegistry | None = None,
    ) -> None:
        self._session = session
        self._endpoint_sets = endpoint_sets
        self._registry = registry
        self._task: asyncio.Task[None] | None = None
        self._scrapes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tollway endpoint scraper")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._scrapes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                wait = self.round(time.monotonic())
            except Exception:  # a bad round must not end scraping for the life of the process
                log.exception("endpoint scraper round failed")
                wait = 1.0
            await asyncio.sleep(wait)

    def round(self, now: float) -> float:
        """Start the scrapes that are due; the seconds until the next one is."""
        targets = self.targets()
        wake = now + MAX_SLEEP
        for target in targets.values():
            state = target.state
            if state.scraping:
                continue
            if state.next_scrape <= now:
                state.scraping = True
                state.next_scrape = now + target.interval
                task = asyncio.create_task(self.scrape(target))
                self._scrapes.add(task)
                task.add_done_callback(self._scrapes.discard)
            wake = min(wake, state.next_scrape)
        return max(0.005, wake - now)

    def targets(self) -> dict[str, Target]:
        """Every scraped endpoint of the live snapshot, once (the shortest interval of the pools naming it)."""
        out: dict[str, Target] = {}
        live: set[str] = set()
        for endpoints in self._endpoint_sets():
            metrics = endpoints.config.metrics
            for member in endpoints.members:
                live.add(member.url)
                if metrics is None:
                    continue
                known = out.get(member.url)
                if known is None or metrics.interval < known.interval:
                    target_url = metrics_url(member.url, metrics.path)
                    out[member.url] = Target(member.state, target_url, metrics.format, metrics.interval)
        if self._registry is not None:
            self._registry.forget_except(live)
        return out

    async def scrape(self, target: Target) -> None:
        state = target.state
        try:
            timeout = aiohttp.ClientTimeout(total=min(max(target.interval, 0.5), 5.0))
            async with self._session.get(target.url, headers=_HEADERS, timeout=timeout) as response:
                if response.status != 200:
                    raise ExpositionError(f"{target.url} answered HTTP {response.status}")
                body = await _read(response)
            load = parse_load(target.format, body)
        except (aiohttp.ClientError, TimeoutError, ExpositionError, OSError) as exc:
            state.scrape_errors += 1
            problem = str(exc) or type(exc).__name__
            if state.scrape_problem is None:
                log.warning(
                    "endpoint metrics scrape failed",
                    extra={"endpoint": state.address, "url": target.url, "error": problem},
                )
            state.scrape_problem = problem
        else:
            state.record_scrape(load, time.monotonic())
            if state.scrape_problem is not None:
                log.info("endpoint metrics scrape recovered", extra={"endpoint": state.address, "url": target.url})
            state.scrape_problem = None
        finally:
            state.scraping = False


async def _read(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > MAX_BODY:
            raise ExpositionError(f"the metrics body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
