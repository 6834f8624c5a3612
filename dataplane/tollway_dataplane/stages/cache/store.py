"""Where cached answers live: this process (bounded LRU) or Redis (shared by every replica).

Both stores keep the same two things: entries by key, each with a TTL, and, for semantic matching, a vector per
entry in its partition. Vectors are searched in memory either way: each replica keeps an index of the
partitions' vectors (`VectorIndex`), which the Redis store fills on start and keeps current from other replicas'
inserts. A store that cannot answer (Redis down or slow) raises `StoreUnavailable`; the cache then treats the
request as a miss, never as an error.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store cannot be reached right now."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    key: str
    similarity: float


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def add_vector(self, partition: str, key: str, vector: Sequence[float], ttl: float) -> None: ...

    async def nearest(self, partition: str, vector: Sequence[float]) -> Neighbour | None:
        """The most similar live vector of the partition (cosine), or None when the partition is empty."""
        ...

    def stats(self) -> tuple[int, int]:
        """(entries, bytes) this store holds in this process; what it knows for a shared store."""
        ...

    async def close(self) -> None: ...


def unit(vector: Sequence[float]) -> tuple[float, ...]:
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return tuple(v / norm for v in vector)


class VectorIndex:
    """Unit vectors by partition, with expiry: a linear scan per lookup, inside one partition only (partitions
    are small: one consumer's, or one route's, questions about one conversation prefix)."""

    def __init__(self, max_vectors: int = 100_000) -> None:
        self._partitions: dict[str, dict[str, tuple[tuple[float, ...], float]]] = {}
        self._count = 0
        self._max = max_vectors

    def add(self, partition: str, key: str, vector: Sequence[float], expires: float) -> None:
        vectors = self._partitions.setdefault(partition, {})
        if key not in vectors:
            self._count += 1
        vectors[key] = (unit(vector), expires)
        if self._count > self._max:
            self._evict()

    def nearest(self, partition: str, vector: Sequence[float], now: float | None = None) -> Neighbour | None:
        vectors = self._partitions.get(partition)
        if not vectors:
            return None
        now = time.time() if now is None else now
        query = unit(vector)
        best: Neighbour | None = None
        for key, (stored, expires) in list(vectors.items()):
            if expires <= now:
                del vectors[key]
                self._count -= 1
                continue
            if len(stored) != len(query):
                continue
            similarity = sum(a * b for a, b in zip(stored, query, strict=True))
            if best is None or similarity > best.similarity:
                best = Neighbour(key, similarity)
        if not vectors:
            del self._partitions[partition]
        return best

    def __len__(self) -> int:
        return self._count

    def _evict(self) -> None:
        """Drop expired vectors, then the oldest partitions, until under the bound."""
        now = time.time()
        for partition in list(self._partitions):
            vectors = self._partitions[partition]
            for key in [k for k, (_, expires) in vectors.items() if expires <= now]:
                del vectors[key]
                self._count -= 1
            if not vectors:
                del self._partitions[partition]
        while self._count > self._max and self._partitions:
            _, vectors = self._partitions.popitem()
            self._count -= len(vectors)


class MemoryStore:
    """Entries in an LRU bounded by total bytes (`--cache-max-bytes`); expired entries are never served."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self.index = VectorIndex()

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= time.time():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, time.time() + ttl)
        self._bytes += len(value)
        while self._bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    async def add_vector(self, partition: str, key: str, vector: Sequence[float], ttl: float) -> None:
        self.index.add(partition, key, vector, time.time() + ttl)

    async def nearest(self, partition: str, vector: Sequence[float]) -> Neighbour | None:
        return self.index.nearest(partition, vector)

    def stats(self) -> tuple[int, int]:
        return len(self._entries), self._bytes

    async def close(self) -> None:
        return None

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)
