"""What the data plane knows about each model server, kept across config reloads.

One `EndpointState` per endpoint URL lives in a registry that every snapshot of a process shares (as key state
does in pools.py), so a reload neither forgets a server's last scrape nor its requests in flight. The scraper
writes the server's own figures; attempts count their requests in and out; the pickers read both. Between two
scrapes the server's load is estimated from what this process sent and saw finish since the last one
(`estimate`), so a burst that arrives within one scrape interval spreads instead of piling onto the server that
looked idlest at the scrape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Load:
    """One scrape of a model server's metrics."""

    waiting: float  # requests queued (vLLM num_requests_waiting, SGLang num_queue_reqs)
    running: float  # requests being decoded
    kv_cache: float  # share of the KV cache in use, 0..1


@dataclass(frozen=True, slots=True)
class Estimate:
    """A server's load as the pickers see it: the last scrape adjusted by this process's requests since then."""

    queue: float
    kv_cache: float
    running: float

    @property
    def outstanding(self) -> float:
        return self.queue + self.running


@dataclass(slots=True)
class EndpointState:
    url: str  # the base URL requests are sent to
    address: str  # host:port, the endpoint's name in metrics and the access log
    first_seen: float = field(default_factory=time.monotonic)
    load: Load | None = None  # the last successful scrape
    scraped_at: float | None = None  # monotonic time of that scrape
    in_flight_at_scrape: int = 0  # this process's requests in flight when that scrape arrived
    in_flight: int = 0  # this process's requests in flight now
    benched_until: float = 0.0  # skipped until then after a failed request
    scrape_errors: int = 0
    scrape_problem: str | None = None  # why the last scrape failed (None: it worked, or none ran yet)
    picks: dict[str, int] = field(default_factory=dict)  # by pool name
    # The scraper's own bookkeeping.
    next_scrape: float = 0.0
    scraping: bool = False

    def estimate(self, kv_per_request: float = 0.0) -> Estimate:
        """The last scrape plus `delta`, this process's requests in flight now minus at the scrape (sent since,
        less finished since). A server that was queueing at the scrape is full: the delta goes to its queue. One
        that was not has free slots: the delta goes to its running count, and its KV-cache use moves by its own
        use per running request (or, when it ran nothing, `kv_per_request`, the pool's average)."""
        load = self.load
        waiting, running, kv = (load.waiting, load.running, load.kv_cache) if load is not None else (0.0, 0.0, 0.0)
        delta = self.in_flight - self.in_flight_at_scrape
        if delta == 0:
            return Estimate(waiting, kv, running)
        if waiting > 0:
            queue = waiting + delta
            return Estimate(max(0.0, queue), kv, running + min(0.0, queue))
        per_request = kv / running if running > 0 else kv_per_request
        running_now = max(0.0, running + delta)
        return Estimate(0.0, min(1.0, max(0.0, kv + (running_now - running) * per_request)), running_now)

    def stale(self, interval: float, now: float) -> bool:
        """No successful scrape for 3 intervals (a new endpoint gets that long for its first one)."""
        since = self.scraped_at if self.scraped_at is not None else self.first_seen
        return now - since > 3 * interval

    def record_scrape(self, load: Load, now: float) -> None:
        self.load = load
        self.scraped_at = now
        self.in_flight_at_scrape = self.in_flight


class EndpointRegistry:
    """Shared by every snapshot of one process; the scraper forgets endpoints no config names any more."""

    def __init__(self) -> None:
        self._states: dict[str, EndpointState] = {}
        self._cursors: dict[str, int] = {}

    def state(self, url: str) -> EndpointState:
        state = self._states.get(url)
        if state is None:
            state = self._states[url] = EndpointState(url, address_of(url))
        return state

    def next_cursor(self, pool: str) -> int:
        cursor = self._cursors.get(pool, 0)
        self._cursors[pool] = cursor + 1
        return cursor

    def forget_except(self, live_urls: set[str]) -> None:
        for url in [u for u, s in self._states.items() if u not in live_urls and s.in_flight == 0]:
            del self._states[url]


def address_of(url: str) -> str:
    """host:port of a base URL (the scheme's default port when it names none); IPv6 hosts in brackets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"


def metrics_url(url: str, path: str) -> str:
    """The server's metrics: the same scheme, host and port as its base URL, at `path`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{path}"
