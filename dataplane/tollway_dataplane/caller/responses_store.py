"""Where the Responses entry keeps responses, so `previous_response_id` can continue them and GET/DELETE find them.

A stored response is the response object its caller received plus the conversation that led to it (every input
item of the chain so far, the previous outputs included), so continuing a conversation is one lookup, never a walk
along the chain, and a response outlives the ones before it. Keys are scoped by consumer: a consumer can never
read, continue or delete another's responses (someone else's id is simply not found).

Two implementations of one small Protocol: in-process (a TTL, and bounded in bytes with the oldest entries going
first) for a single replica, and Redis (a TTL per key) when the gateway has one, so any replica continues any
conversation. Entries are kept encoded, so the in-process store measures what it holds and never shares a
mutable object with a request.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..errors import GatewayError

log = logging.getLogger("tollway.responses")

DEFAULT_TTL = 3600.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]  # the response object, as the caller received it
    history: list[dict[str, Any]]  # the conversation's input items up to this response (without its output)

    @property
    def id(self) -> str:
        return str(self.response.get("id") or "")

    def conversation(self) -> list[dict[str, Any]]:
        """What a call continuing this response starts from: the history, then this response's output."""
        output = self.response.get("output")
        return [*self.history, *(output if isinstance(output, list) else [])]

    def encode(self) -> bytes:
        return orjson.dumps({"response": self.response, "history": self.history})

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        value = orjson.loads(data)
        return cls(response=value["response"], history=value["history"])


class ResponseStore(Protocol):
    async def get(self, consumer: str, response_id: str) -> StoredResponse | None: ...

    async def put(self, consumer: str, stored: StoredResponse) -> None: ...

    async def delete(self, consumer: str, response_id: str) -> bool:
        """True when there was such a response (of this consumer) to delete."""
        ...

    async def close(self) -> None: ...


class MemoryResponseStore:
    """One replica's store: entries expire after `ttl` seconds, and the oldest go first above `max_bytes`."""

    def __init__(self, ttl: float = DEFAULT_TTL, max_bytes: int = DEFAULT_MAX_BYTES):
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()  # oldest first

    async def get(self, consumer: str, response_id: str) -> StoredResponse | None:
        entry = self._entries.get((consumer, response_id))
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._drop((consumer, response_id))
            return None
        return StoredResponse.decode(entry[1])

    async def put(self, consumer: str, stored: StoredResponse) -> None:
        key = (consumer, stored.id)
        data = stored.encode()
        if len(data) > self.max_bytes:
            log.warning("response too large to keep", extra={"response_id": stored.id, "bytes": len(data)})
            return
        self._drop(key)
        self._entries[key] = (time.monotonic() + self.ttl, data)
        self.bytes += len(data)
        self._evict()

    async def delete(self, consumer: str, response_id: str) -> bool:
        return self._drop((consumer, response_id))

    async def close(self) -> None:
        return None

    @property
    def entries(self) -> int:
        return len(self._entries)

    def _drop(self, key: tuple[str, str]) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= len(entry[1])
        return True

    def _evict(self) -> None:
        # One TTL for every entry, so insertion order is expiry order: expired entries sit at the front.
        now = time.monotonic()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and self.bytes <= self.max_bytes:
                return
            self._drop(key)


class RedisCommands(Protocol):
    """The part of a `redis.asyncio` client this store uses."""

    def get(self, name: str, /) -> Awaitable[Any]: ...

    def set(self, name: str, value: bytes, *, ex: int | None = None) -> Awaitable[Any]: ...

    def delete(self, *names: str) -> Awaitable[Any]: ...

    def aclose(self) -> Awaitable[None]: ...


class RedisResponseStore:
    """Responses in Redis, one key per response (`{prefix}{consumer}:{id}`) with the TTL on the key. Takes a
    `redis.asyncio` client; a Redis that cannot be reached is a 503 for reads and a logged warning for writes
    (the answer has reached the caller already; only its continuation is lost)."""

    def __init__(self, client: RedisCommands, ttl: float = DEFAULT_TTL, prefix: str = "tollway:responses:"):
        self.client = client
        self.ttl = max(1, math.ceil(ttl))
        self.prefix = prefix

    def key(self, consumer: str, response_id: str) -> str:
        return f"{self.prefix}{consumer}:{response_id}"

    async def get(self, consumer: str, response_id: str) -> StoredResponse | None:
        try:
            data = await self.client.get(self.key(consumer, response_id))
        except Exception as exc:  # redis-py raises its own ConnectionError/TimeoutError family
            raise _unavailable(exc) from None
        return StoredResponse.decode(data) if data is not None else None

    async def put(self, consumer: str, stored: StoredResponse) -> None:
        try:
            await self.client.set(self.key(consumer, stored.id), stored.encode(), ex=self.ttl)
        except Exception as exc:
            log.warning("cannot keep response in Redis", extra={"response_id": stored.id, "error": str(exc)})

    async def delete(self, consumer: str, response_id: str) -> bool:
        try:
            return bool(await self.client.delete(self.key(consumer, response_id)))
        except Exception as exc:
            raise _unavailable(exc) from None

    async def close(self) -> None:
        return None  # the client is the gateway's, shared with the limits and the cache: its owner closes it


def _unavailable(exc: Exception) -> GatewayError:
    log.warning("response store unreachable", extra={"error": f"{type(exc).__name__}: {exc}"})
    return GatewayError(503, "The response store is unavailable; retry later.", "response_store_unavailable")
