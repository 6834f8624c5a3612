"""The three ways of choosing among the endpoints that may take a request.

Each picker gets the candidates (fresh metrics, not cooling down, not tried yet by this request, queue below
`maxQueue`) with their load estimates, and returns one. Ties rotate with a per-pool cursor, so equal servers
share the work instead of the first one taking it all.

* least-load: the lowest (queue, KV-cache use in steps of 5%, running). The queue comes first because a queued
  request waits for a free slot however empty the cache is; KV-cache use next because a nearly full cache makes
  the server preempt or queue the next long prompt; running last. The 5% steps keep a small difference in cache
  use from outweighing a difference in running requests.
* prefix-affinity: consistent hashing with bounded load (Mirrokni, Thorup, Zadimoghaddam 2018). Every endpoint
  owns 64 points on a hash ring; a request's prefix key (`prefix.py`) walks the ring from its point and takes the
  first endpoint whose outstanding requests (queue + running) stay within 1.25 times the average after adding
  this one. A prefix therefore keeps landing on the server with its KV cache warm, a hot prefix spills over to
  the next server on the ring (which then warms up too), and adding or removing an endpoint moves only the keys
  next to its points.
* round-robin: in turn, skipping endpoints that may not take a request.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

from .prefix import stable_hash
from .state import Estimate

T = TypeVar("T")

RING_POINTS = 64  # per endpoint
LOAD_BOUND = 1.25  # bounded load: at most this multiple of the average outstanding requests
KV_STEP = 0.05


def score(estimate: Estimate) -> tuple[float, int, float]:
    return (estimate.queue, math.floor(estimate.kv_cache / KV_STEP + 1e-9), estimate.running)


def least_load(candidates: Sequence[tuple[T, Estimate]], start: int) -> T:
    n = len(candidates)
    best = min(range(n), key=lambda i: (score(candidates[(start + i) % n][1]), i))
    return candidates[(start + best) % n][0]


class Ring:
    """A consistent-hash ring over member indexes 0..n-1, named by their URLs (the same ring on every replica)."""

    def __init__(self, names: Sequence[str]):
        points = sorted(
            (stable_hash(f"{name}#{i}".encode()), index) for index, name in enumerate(names) for i in range(RING_POINTS)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [index for _, index in points]
        self._size = len(names)

    def walk(self, key: int) -> Iterator[int]:
        """Member indexes in ring order from `key`'s point, each once."""
        if not self._owners:
            return
        seen: set[int] = set()
        position = bisect.bisect_right(self._hashes, key)
        for step in range(len(self._owners)):
            owner = self._owners[(position + step) % len(self._owners)]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == self._size:
                    return


def bounded(ring: Ring, key: int, candidates: dict[int, Estimate], total: float, usable: int) -> int | None:
    """The first candidate on the ring from `key` whose outstanding requests, with this one, stay within the
    bound (LOAD_BOUND x the average over the `usable` endpoints, `total` outstanding among them); None if none."""
    cap = math.ceil(LOAD_BOUND * (total + 1) / max(1, usable))
    for index in ring.walk(key):
        estimate = candidates.get(index)
        if estimate is not None and estimate.outstanding + 1 <= cap:
            return index
    return None
