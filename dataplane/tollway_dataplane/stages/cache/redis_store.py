"""The response cache in Redis, shared by every replica, on any topology the gateway's Redis client reaches.

Entries are plain keys with a TTL (`tollway:cache:e:<key>`), one command each, so they work on Redis Cluster
without hash tags. Semantic vectors are keys too (`tollway:cache:v:<key>`, the partition and the packed floats,
with the entry's TTL), and every insert is also appended to one stream (`tollway:cache:vectors`, trimmed to a
bounded length). Each replica keeps the vectors in memory (`VectorIndex`): on start it reads the vector keys
(SCAN, in the background), then follows the stream from where it stood before the scan, so it sees what other
replicas insert within a moment and never searches Redis on the request path. A Redis that is down or slow
makes the store unavailable for a moment (the shared outage guard); the cache then serves misses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

from ...redisconn import Outage, RedisClient, TurnPipeline, Unavailable, reconnector
from .store import Neighbour, StoreUnavailable, VectorIndex

log = logging.getLogger("tollway.cache")

ENTRY = "tollway:cache:e:"
VECTOR = "tollway:cache:v:"
STREAM = "tollway:cache:vectors"
STREAM_LENGTH = 100_000  # about a day of inserts at one a second; a replica further behind rescans on start


def _pack(partition: str, vector: Sequence[float]) -> bytes:
    return partition.encode() + b"\n" + struct.pack(f"<{len(vector)}f", *vector)


def _insert(key: str, packed: bytes, expires: float) -> tuple[Any, ...]:
    """The XADD that tells other replicas about a vector."""
    return ("XADD", STREAM, "MAXLEN", "~", STREAM_LENGTH, "*", "k", key, "v", packed, "x", repr(expires))


def _unpack(raw: bytes) -> tuple[str, tuple[float, ...]]:
    partition, _, packed = raw.partition(b"\n")
    return partition.decode(), struct.unpack(f"<{len(packed) // 4}f", packed[: len(packed) // 4 * 4])


class RedisStore:
    def __init__(self, client: RedisClient, *, follow: bool = True, retry_interval: float = 0.5, block_ms: int = 300):
        self._client = client
        self._block_ms = block_ms  # shorter than the client's socket timeout, which would cut a longer block
        self._outage = Outage("the response cache", retry_interval, reconnect=reconnector(client))
        self._pipeline = TurnPipeline(client, self._outage)  # lookups and stores of one loop turn leave together
        self.index = VectorIndex()
        self._task: asyncio.Task[None] | None = None
        self._follow = follow
        self._entries_written = 0
        self._bytes_written = 0

    async def _command(self, *words: Any, deferred: bool = False) -> Any:
        try:
            return await self._pipeline.command(*words, deferred=deferred)
        except Unavailable as exc:
            raise StoreUnavailable(str(exc)) from None
        except Exception as exc:  # an error reply or a client fault: this lookup misses, the caller never sees it
            log.warning("cache command failed", extra={"command": words[0], "error": f"{type(exc).__name__}: {exc}"})
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def get(self, key: str) -> bytes | None:
        self._start()
        value: bytes | None = await self._command("GET", ENTRY + key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._start()
        # Stored after the answer went out: it rides with the next lookup's round trip (ahead of it, so this
        # replica reads its own writes) or leaves on its own a moment later.
        await self._command("SET", ENTRY + key, value, "PX", max(1, int(ttl * 1000)), deferred=True)
        self._entries_written += 1
        self._bytes_written += len(value)

    async def add_vector(self, partition: str, key: str, vector: Sequence[float], ttl: float) -> None:
        self._start()
        expires = time.time() + ttl
        self.index.add(partition, key, vector, expires)
        packed = _pack(partition, vector)
        await asyncio.gather(  # issued in the same turn: one pipeline, one round trip
            self._command("SET", VECTOR + key, packed, "PX", max(1, int(ttl * 1000)), deferred=True),
            self._command(*_insert(key, packed, expires), deferred=True),
        )

    async def nearest(self, partition: str, vector: Sequence[float]) -> Neighbour | None:
        self._start()
        return self.index.nearest(partition, vector)

    def stats(self) -> tuple[int, int]:
        """What this replica wrote since it started (the shared store's totals are Redis's business)."""
        return self._entries_written, self._bytes_written

    async def close(self) -> None:
        await self._pipeline.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- keeping the in-memory index current ------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None and self._follow:
            self._task = asyncio.get_running_loop().create_task(self._keep_index())

    async def _keep_index(self) -> None:
        """Scan the stored vectors once, then follow other replicas' inserts; retry quietly while Redis is down."""
        last = "$"
        while True:
            try:
                last = await self._stream_position()
                await self._scan()
                break
            except Exception as exc:  # down at start: try again in a moment, never on the request path
                log.debug("cache index load deferred", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1.0)
        while True:
            try:
                reply: Any = await self._client.xread({STREAM: last}, count=1000, block=self._block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("cache index follow paused", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1.0)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    self._learn(fields)

    async def _stream_position(self) -> str:
        newest = await self._client.xrevrange(STREAM, count=1)
        if not newest:
            return "0-0"
        entry_id = newest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def _scan(self) -> None:
        async for key in self._client.scan_iter(match=VECTOR + "*", count=1000):
            raw: Any = await self._client.get(key)
            ttl = await self._client.pttl(key)
            if raw is None or ttl is None or ttl <= 0:
                continue
            name = key.decode() if isinstance(key, bytes) else str(key)
            partition, vector = _unpack(raw)
            self.index.add(partition, name[len(VECTOR) :], vector, time.time() + ttl / 1000)

    def _learn(self, fields: dict[Any, Any]) -> None:
        def field(name: str) -> Any:
            return fields.get(name.encode(), fields.get(name))

        try:
            key = field("k")
            partition, vector = _unpack(field("v"))
            expires = float(field("x"))
        except (TypeError, ValueError, struct.error, AttributeError):
            return
        key = key.decode() if isinstance(key, bytes) else str(key)
        if expires > time.time():
            self.index.add(partition, key, vector, expires)
