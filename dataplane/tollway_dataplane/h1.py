"""The upstream HTTP/1.1 client: keep-alive connections on asyncio protocols, built for relaying LLM answers.

A general client pays per chunk for what a relay does not need: a stream object, a future and a task wake-up for
every read, a timer re-armed for every chunk. Here a response's body goes where the caller says: collected whole
(`read`), pulled chunk by chunk (`readany`, while an attempt can still fail over), or pushed into a `BodySink`
from the connection's own `data_received`, so a relayed stream costs no coroutine switch per chunk and
back-pressure is the transport's own `pause_reading`.

Timeouts cost nothing per chunk either: each connection keeps a deadline (the first byte, then each gap, and an
overall limit), and one sweeper per client checks the deadlines of the busy connections a few times a second.
Connections are kept per (scheme, host, port) and reused while the server allows it; a request on a reused
connection that the server had closed meanwhile is sent again once on a fresh one, as it never reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import urlsplit

log = logging.getLogger("tollway.upstream")

_SWEEP_SECONDS = 0.1
_MAX_HEAD = 64 * 1024  # a response head larger than this is not an LLM API's
_MAX_CHUNK_LINE = 4096
# A body pulled with `readany` and not read as fast as it comes (the caller reads slowly): above this much held,
# the connection stops reading until the puller takes it, so back-pressure reaches the upstream when pulling too.
_PULL_HIGH_WATER = 256 * 1024


@functools.lru_cache(maxsize=1024)
def _request_start(url: str) -> tuple[tuple[str, str, int], str]:
    """(scheme, host, port) and the request line with the Host header, for a URL: parsed once per URL (the
    upstream URLs come from the config, so they are few)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):
        authority = f"[{host}]" if parts.port is None else f"[{host}]:{parts.port}"
    return (scheme, host, port), f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n"


class ConnectFailed(OSError):
    """The connection could not be made (refused, unreachable, DNS, TLS handshake)."""


class Disconnected(ConnectionError):
    """The server closed or reset the connection before the response was complete."""


class BadResponse(ConnectionError):
    """The bytes the server sent are not an HTTP/1.x response."""


KEEP = -1.0  # for `readany`: keep the deadline that runs (the first byte's), do not start a gap timeout


class BodySink(Protocol):
    """Where a pushed body goes, synchronously, from the connection's callbacks."""

    def data(self, data: bytes) -> None: ...

    def end(self, error: BaseException | None) -> None:
        """The body is complete (error None), or broke off with `error` (Disconnected, TimeoutError, ...)."""
        ...


class Response:
    """One response: its head at once, its body as the caller chooses. `close` always, when done with it."""

    __slots__ = ("_conn", "_open", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: dict[str, str]):
        self._conn = conn
        self._open = True
        self.status = status
        self.headers = headers  # lower-case names; a repeated header keeps its last value

    async def read(self, idle: float | None = None) -> bytes:
        """The whole body (each gap bounded by `idle`)."""
        return await self._conn.read_all(idle)

    async def readany(self, idle: float | None = KEEP) -> bytes:
        """The body's next bytes, b"" at its end. `idle` bounds the wait from now on (KEEP: the deadline that
        runs, e.g. the first byte's, still applies)."""
        return await self._conn.read_some(idle)

    def push(self, sink: BodySink, idle: float | None) -> None:
        """Deliver the rest of the body to `sink` from now on (buffered bytes first, at once)."""
        self._conn.push_to(sink, idle)

    def pull(self) -> None:
        """Stop pushing (also from inside the sink's `data`): the rest is buffered for `readany`."""
        self._conn.unpush()

    def pause_reading(self) -> None:
        self._conn.pause()

    def resume_reading(self) -> None:
        self._conn.resume()

    def close(self) -> None:
        """Release the connection: back to the pool when the body was read to its end, else closed (which tells
        the provider to stop generating). Safe to call twice."""
        if self._open:
            self._open = False
            self._conn.finish()


class _Connection(asyncio.Protocol):
    """One connection and the one request at a time it carries."""

    # Slots: every chunk of every open stream reads a dozen of these, and thousands of connections are open.
    __slots__ = (
        "_body_mode",
        "_buffer",
        "_buffered",
        "_chunk_state",
        "_client",
        "_deadline",
        "_done",
        "_error",
        "_gap",
        "_got_bytes",
        "_head",
        "_head_future",
        "_held_back",
        "_line",
        "_pulling",
        "_remaining",
        "_reusable",
        "_sink",
        "_status",
        "_total_deadline",
        "_waiter",
        "closed",
        "idle_since",
        "key",
        "reused",
        "transport",
    )

    def __init__(self, client: Client, key: tuple[str, str, int]):
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._reset_request()

    def _reset_request(self) -> None:
        self._head = bytearray()
        self._head_future: asyncio.Future[Response] | None = None
        self._status = 0
        self._reusable = True
        self._body_mode = ""  # "length" | "chunked" | "close"
        self._remaining = 0  # length mode: bytes left; chunked: bytes left in this chunk
        self._chunk_state = "size"  # size | data | crlf | trailer | done
        self._line = bytearray()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._pulling = False  # read with `read_some`, batch by batch (not `read_all`, which waits for the end)
        self._held_back = False  # paused because the puller has not taken what is buffered
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._sink: BodySink | None = None
        self._deadline = 0.0  # monotonic; 0: none
        self._gap: float | None = None  # the idle timeout once the body flows
        self._total_deadline = 0.0
        self._got_bytes = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._client.forget(self)
        if self._head_future is None and self._body_mode == "close" and exc is None and not self._done:
            self._complete(None)  # a body delimited by the end of the connection
        elif self._head_future is not None or not self._done:
            self._fail(Disconnected(f"the upstream closed the connection{f': {exc}' if exc else ''}"))

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._gap is not None:
            self._deadline = time.monotonic() + self._gap
        if self._head_future is not None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._fail(BadResponse("the response head is too large"))
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head = bytearray()
            if not self._parse_head(head):
                return
            data = rest
            if not data and not self._done:
                return
        if data:
            self._body(data)

    # -- the head ------------------------------------------------------------------------------------------

    def _parse_head(self, head: bytes) -> bool:
        lines = head.split(b"\r\n")
        try:
            version, status_text = lines[0].split(b" ", 2)[:2]
            status = int(status_text)
        except ValueError:
            self._fail(BadResponse("the response does not start with an HTTP status line"))
            return False
        if not version.startswith(b"HTTP/1."):
            self._fail(BadResponse("the response is not HTTP/1.x"))
            return False
        if 100 <= status < 200:  # an interim answer (100 Continue): the real head follows
            self._head = bytearray()
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        self._reusable = "close" not in connection and (version != b"HTTP/1.0" or "keep-alive" in connection)
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            self._body_mode = "chunked"
        elif "content-length" in headers:
            try:
                self._remaining = int(headers["content-length"])
            except ValueError:
                self._fail(BadResponse("the response has an invalid Content-Length"))
                return False
            self._body_mode = "length"
        elif status in (204, 304):
            self._body_mode, self._remaining = "length", 0
        else:
            self._body_mode, self._reusable = "close", False
        self._status = status
        future, self._head_future = self._head_future, None
        if self._body_mode == "length" and self._remaining == 0:
            self._done = True
        if future is not None and not future.done():
            future.set_result(Response(self, status, headers))
        return True

    # -- the body ------------------------------------------------------------------------------------------

    def _body(self, data: bytes) -> None:
        mode = self._body_mode
        if mode == "length":
            if len(data) >= self._remaining:
                data, extra = data[: self._remaining], data[self._remaining :]
                self._remaining = 0
                if data:
                    self._deliver(data)
                if extra:
                    self._reusable = False  # bytes past the body: the connection's framing cannot be trusted
                self._complete(None)
                return
            self._remaining -= len(data)
            self._deliver(data)
        elif mode == "chunked":
            self._chunked(data)
        else:
            self._deliver(data)

    def _chunked(self, data: bytes) -> None:
        if self._chunk_state == "size" and not self._line:
            # The common case of a relayed stream: exactly one whole chunk per read.
            end = data.find(b"\r\n")
            if 0 < end <= 16:
                try:
                    length = int(data[:end], 16)
                except ValueError:
                    length = -1
                if length > 0 and len(data) == end + length + 4 and data.endswith(b"\r\n"):
                    self._deliver(data[end + 2 : end + 2 + length])
                    return
        position, size = 0, len(data)
        out: list[bytes] = []
        while position < size and self._chunk_state != "done":
            state = self._chunk_state
            if state == "data":
                take = min(self._remaining, size - position)
                out.append(data[position : position + take])
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = "crlf"
                continue
            end = data.find(b"\n", position)
            if end < 0:
                self._line += data[position:]
                if len(self._line) > _MAX_CHUNK_LINE:
                    self._fail(BadResponse("a chunk-size line is too long"))
                    return
                break
            self._line += data[position:end]
            position = end + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line = bytearray()
            if state == "size":
                try:
                    self._remaining = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._fail(BadResponse("the chunked body is malformed"))
                    return
                self._chunk_state = "data" if self._remaining else "trailer"
            elif state == "crlf":
                if line:
                    self._fail(BadResponse("a chunk does not end where its size says"))
                    return
                self._chunk_state = "size"
            elif state == "trailer" and not line:
                self._chunk_state = "done"
        if out:
            self._deliver(out[0] if len(out) == 1 else b"".join(out))
        if self._chunk_state == "done":
            if position < size:
                self._reusable = False
            self._complete(None)

    def _deliver(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            sink.data(data)
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._pulling and not self._held_back and self._buffered > _PULL_HIGH_WATER:
            self._held_back = True
            self.pause()
        self._wake()

    def _complete(self, error: BaseException | None) -> None:
        self._done = True
        self._error = error
        self._gap = None
        self._deadline = self._total_deadline = 0.0
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.end(error)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._reusable = False
        future, self._head_future = self._head_future, None
        if future is not None and not future.done():
            future.set_exception(error)
        if not self._done:
            self._complete(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- what a response asks -------------------------------------------------------------------------------

    def send(self, data: bytes, first_byte: float | None, total: float | None) -> asyncio.Future[Response]:
        loop = asyncio.get_running_loop()
        self._head_future = loop.create_future()
        now = time.monotonic()
        self._deadline = now + first_byte if first_byte else 0.0
        self._total_deadline = now + total if total else 0.0
        assert self.transport is not None
        self.transport.write(data)
        self._client.track(self)
        return self._head_future

    async def read_some(self, idle: float | None) -> bytes:
        if idle != KEEP:
            self._set_gap(idle)
        self._pulling = True
        if self._held_back:  # the puller is back for more: read on
            self._held_back = False
            self.resume()
        while not self._buffer:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        return data

    async def read_all(self, idle: float | None) -> bytes:
        self._set_gap(idle)
        while not self._done:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        if self._error is not None:
            raise self._error
        data = b"".join(self._buffer)
        self._buffer.clear()
        return data

    def push_to(self, sink: BodySink, idle: float | None) -> None:
        self._set_gap(idle)
        self._sink = sink  # before the buffered bytes: the sink may go back to pulling while it takes them
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._buffered = 0
            sink.data(data)
        if self._done and self._sink is sink:
            self._sink = None
            sink.end(self._error)

    def unpush(self) -> None:
        self._sink = None

    def _set_gap(self, idle: float | None) -> None:
        # The idle timeout starts now (the gap right after the first event included), then follows each read.
        self._gap = idle
        self._deadline = time.monotonic() + idle if idle else 0.0

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self._deadline = 0.0  # a paused read is the caller's wait, not the upstream's silence

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
            if self._gap:
                self._deadline = time.monotonic() + self._gap

    def check(self, now: float) -> None:
        """Called by the sweeper: a deadline passed means a timeout."""
        if (self._deadline and now > self._deadline) or (self._total_deadline and now > self._total_deadline):
            self._fail(TimeoutError("the upstream did not answer in time"))

    def finish(self) -> None:
        """The response is done with: reuse the connection if its body was read whole, else close it."""
        self._client.untrack(self)
        if self._done and self._error is None and self._reusable and not self.closed and not self._buffer:
            self._reset_request()
            self._client.idle_again(self)
            return
        self._reusable = False
        self._sink = None
        if self.transport is not None and not self.closed:
            self.transport.abort() if not self._done else self.transport.close()
        self.closed = True


class Client:
    """Connections per (scheme, host, port), each carrying one request at a time, kept open between them."""

    def __init__(self, *, keepalive: float = 60.0, max_idle_per_host: int = 1024, dns_ttl: float = 300.0):
        self.keepalive = keepalive
        self.max_idle_per_host = max_idle_per_host
        self.dns_ttl = dns_ttl
        self._idle: defaultdict[tuple[str, str, int], deque[_Connection]] = defaultdict(deque)
        self._busy: set[_Connection] = set()
        self._addresses: dict[tuple[str, int], tuple[float, list[tuple[str, int]]]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect: float | None = None,
        first_byte: float | None = None,
        total: float | None = None,
    ) -> Response:
        """POST `body` to `url`; returns once the response head arrived (TimeoutError, ConnectFailed,
        Disconnected, BadResponse otherwise)."""
        key, start = _request_start(url)
        # Answers are relayed and parsed as they come: never compressed.
        head = [f"{start}Content-Length: {len(body)}\r\n{_IDENTITY}"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() not in _OWN_HEADERS)
        head.append("\r\n")
        data = "".join(head).encode("latin-1") + body
        for attempt in range(2):
            conn = self._take_idle(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, connect)
            try:
                return await conn.send(data, first_byte, total)
            except Disconnected:
                if reused and not conn._got_bytes:
                    continue  # the server had closed this kept connection: the request never reached it
                raise
            except BaseException:
                conn._fail(Disconnected("the request was given up"))
                conn.finish()
                raise
        raise Disconnected("the upstream closed the connection")

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            if conn.closed or now - conn.idle_since > self.keepalive:
                if conn.transport is not None and not conn.closed:
                    conn.transport.close()
                continue
            conn.reused = True
            conn._got_bytes = False
            return conn
        return None

    async def _connect(self, key: tuple[str, str, int], limit: float | None) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(limit):
                addresses = await self._resolve(host, port)
                last: OSError | None = None
                for address, address_port in addresses:
                    try:
                        transport, protocol = await loop.create_connection(
                            lambda: _Connection(self, key),
                            address,
                            address_port,
                            ssl=context,
                            server_hostname=host if context is not None else None,
                        )
                        # uvloop may call connection_made only on its next turn: the transport is known now.
                        protocol.transport = transport
                        return protocol
                    except OSError as exc:
                        last = exc
                raise last or OSError(f"no address for {host}")
        except TimeoutError:
            raise ConnectFailed(f"connecting to {host}:{port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"{host}:{port}: {exc}") from None

    async def _resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        cached = self._addresses.get((host, port))
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=1)  # SOCK_STREAM
        addresses = list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in infos))
        if len(self._addresses) > 10_000:
            self._addresses.clear()
        self._addresses[(host, port)] = (now + self.dns_ttl, addresses)
        return addresses

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def idle_again(self, conn: _Connection) -> None:
        idle = self._idle[conn.key]
        if self._closed or len(idle) >= self.max_idle_per_host:
            if conn.transport is not None:
                conn.transport.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)

    def track(self, conn: _Connection) -> None:
        self._busy.add(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    def untrack(self, conn: _Connection) -> None:
        self._busy.discard(conn)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for conn in list(self._busy):
            conn.check(now)
        if self._busy and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(_SWEEP_SECONDS, self._sweep)

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    with contextlib.suppress(Exception):
                        conn.transport.close()
        self._idle.clear()
        for conn in list(self._busy):
            if conn.transport is not None:
                conn.transport.abort()
        self._busy.clear()


# Framing is the client's business; callers' values for these are ignored.
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_IDENTITY = "Accept-Encoding: identity\r\n"
