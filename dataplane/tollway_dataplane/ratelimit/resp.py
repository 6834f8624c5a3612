"""A small pipelined Redis client for the limiter's hot path: one connection, commands written back to back.

Every decision is one EVALSHA; a general-purpose client spends most of its time on connection-pool
bookkeeping and command packing around that. Here commands issued in the same event-loop turn leave in one
write, replies are matched to callers in order (Redis answers a connection's commands in order), and a call
that times out closes the connection so no later reply can be mistaken for its own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast
from urllib.parse import unquote, urlparse


class RedisError(Exception):
    """An error reply from Redis (e.g. NOSCRIPT), or a connection problem."""


def encode_command(*parts: bytes | str | int | float) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buffer: bytes | bytearray, start: int) -> tuple[Any, int]:
    """One RESP2/RESP3-simple reply from `buffer` at `start`: (value, next index); _Incomplete when cut."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind = buffer[start]
    line = bytes(buffer[start + 1 : end])
    position = end + 2
    if kind == 58:  # ':' integer
        return int(line), position
    if kind == 43:  # '+' simple string
        return line.decode(), position
    if kind == 45:  # '-' error
        return RedisError(line.decode(errors="replace")), position
    if kind == 36:  # '$' bulk string
        length = int(line)
        if length < 0:
            return None, position
        if len(buffer) < position + length + 2:
            raise _Incomplete
        return bytes(buffer[position : position + length]), position + length + 2
    if kind == 42:  # '*' array
        count = int(line)
        if count < 0:
            return None, position
        items = []
        for _ in range(count):
            item, position = _parse(buffer, position)
            items.append(item)
        return items, position
    raise RedisError(f"unexpected reply type {chr(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self._buffer = bytearray()
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        try:
            while position < len(buffer):
                value, position_after = _parse(buffer, position)
                position = position_after
                if not self.waiters:
                    continue  # a reply nobody waits for (its caller timed out and the connection is going)
                waiter = self.waiters.popleft()
                if waiter.done():
                    continue
                if isinstance(value, RedisError):
                    waiter.set_exception(value)
                else:
                    waiter.set_result(value)
        except _Incomplete:
            pass
        del buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        error = RedisError(f"connection lost: {exc}" if exc else "connection closed")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None

    def send(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        if self.transport is None or self.transport.is_closing():
            raise RedisError("not connected")
        future: asyncio.Future[Any] = loop.create_future()
        self.waiters.append(future)
        self._pending.append(command)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)  # everything sent in this loop turn goes out in one write
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.transport is not None and self._pending:
            self.transport.write(b"".join(self._pending))
        self._pending.clear()


class RespClient:
    """redis://[:password@]host[:port][/db] or rediss:// (TLS). One lazily (re)opened, pipelined connection."""

    def __init__(self, url: str, password: str | None = None, timeout: float = 0.5):
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} (use redis:// or rediss://)")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = password if password is not None else (unquote(parsed.password) if parsed.password else None)
        self.db = int(parsed.path.lstrip("/") or 0)
        self.tls = parsed.scheme == "rediss"
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        context = ssl.create_default_context() if self.tls else None
        async with asyncio.timeout(self.timeout):
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=context)
            hello = []
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                hello.append(protocol.send(encode_command(*auth), loop))
            if self.db:
                hello.append(protocol.send(encode_command("SELECT", self.db), loop))
            for future in hello:
                await future
        return protocol

    async def connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and not protocol.transport.is_closing():
            return protocol
        if self._connecting is None:  # one connect at a time; concurrent callers wait for it
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            protocol = await asyncio.shield(self._connecting)
        except BaseException:
            self._connecting = None
            raise
        self._protocol, self._connecting = protocol, None
        return protocol

    async def execute(self, *parts: bytes | str | int | float) -> Any:
        try:
            protocol = await self.connection()
        except (OSError, TimeoutError) as exc:
            raise RedisError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        loop = asyncio.get_running_loop()
        future = protocol.send(encode_command(*parts), loop)
        timer = loop.call_later(self.timeout, self._expire, protocol, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, protocol: _Protocol, future: asyncio.Future[Any]) -> None:
        if not future.done():
            future.set_exception(TimeoutError(f"Redis did not answer within {self.timeout}s"))
            if protocol.transport is not None:
                protocol.transport.abort()  # later replies must not be matched to other callers

    async def close(self) -> None:
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            await protocol.closed
