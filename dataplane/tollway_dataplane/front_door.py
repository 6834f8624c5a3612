"""The gateway's HTTP/1.1 server: connections, request framing, keep-alive, and the answer to what no handler takes.

The front door owns the wire; the handler (the gateway's dispatcher, or the metrics page) sees an `Inbound`
request and returns an answer (`messages`). Requests are framed by llhttp through aiohttp's C parser, the same
strict parser aiohttp's own server uses (request smuggling is its problem, solved there), but the connection,
the request objects and the answers are the gateway's: aiohttp's server side was about 15% of a request's CPU
(a task per connection and one per request, a request object with lazy properties, a response multidict, a
prepare signal). Here one task serves the requests a connection has queued, in order
(pipelining), an answer is one write, and idle connections are closed by one sweep per listener instead of a
timer per connection.

What the parser rejects before any handler runs (an oversized or malformed header, a bad Content-Length,
Content-Length together with Transfer-Encoding, bytes not allowed in the path, ...) is answered with error JSON
built from the exception's class alone and never from its message, which quotes the offending bytes (an
`Authorization` value among them); the log gets one line without the request's bytes. The answer has the
OpenAI error object plus a top-level `"type": "error"`, so it is also a valid Anthropic error: the parser fails
before the path is known, and both kinds of SDK read it. A handler that raises gets the same shape (500).

A caller that disconnects cancels its handler at once, which closes the upstream request, so the provider stops
generating tokens nobody will read. Draining stops the listener, closes idle connections, and ends busy ones
after their answer (`Connection: close`). No `Server` header is sent (it named the framework and versions), and
request bodies are never decompressed here (the intake decides which content codings it accepts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import HttpVersion11
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpRequestParser
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web import RequestPayloadError

from .messages import Answer, Inbound, Response, StreamResponse

log = logging.getLogger("tollway.http")

MAX_FIELD_BYTES = 8190  # one header line (name and value) or the request line
MAX_HEADERS = 128

# llhttp's fixed reasons (the text before the quoted bytes) that say which rule a request broke.
_FRAMING_REASONS = (
    "Invalid character in Content-Length",
    "Duplicate Content-Length",
    "Content-Length can't be present with Transfer-Encoding",
    "Transfer-Encoding can't be present with Content-Length",
    "Invalid Transfer-Encoding",
    "Invalid character in chunk size",
    "Invalid chunk size",
    "Request has invalid `Transfer-Encoding`",
)
_HEADER_REASONS = ("Invalid header", "Invalid character in header", "Missing expected CR after header", "Empty")
_TOO_MANY_HEADERS = "Too many headers received"


def rejection(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, code, message) for what aiohttp could not parse or serve; never a byte of the request."""
    if isinstance(exc, LineTooLong) or (isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS):
        return (
            431,
            "request_header_too_large",
            f"The request line or a header field is longer than {MAX_FIELD_BYTES} bytes, "
            f"or there are more than {MAX_HEADERS} header fields.",
        )
    if isinstance(exc, BadHttpMethod):
        if exc.message.startswith("Received HTTPS"):  # aiohttp's fixed text for a TLS hello on a plain port
            return 400, "tls_on_plain_port", "This port speaks plain HTTP, not TLS."
        return 400, "invalid_method", "The request method is not a valid HTTP token."
    if isinstance(exc, BadStatusLine):
        return 400, "invalid_request_line", "The request line is not valid HTTP/1.x."
    if isinstance(exc, InvalidURLError):
        return 400, "invalid_path", "The request target is not a valid path (percent-encode anything but ASCII)."
    if isinstance(exc, ContentLengthError | TransferEncodingError) or (
        isinstance(exc, HttpProcessingError) and exc.message.startswith(_FRAMING_REASONS)
    ):
        return 400, "invalid_framing", "The body framing is invalid (Content-Length / Transfer-Encoding)."
    if isinstance(exc, InvalidHeader) or (
        isinstance(exc, HttpProcessingError) and exc.message.startswith(_HEADER_REASONS)
    ):
        return 400, "invalid_header", "A header field is malformed or holds characters not allowed in HTTP."
    if isinstance(exc, HttpProcessingError) or (status == 400 and exc is None):
        return 400, "malformed_request", "The request is not valid HTTP/1.x."
    if status == 504 or isinstance(exc, asyncio.TimeoutError):
        return 504, "gateway_timeout", "The gateway timed out serving this request."
    return 500, "internal_error", "Internal gateway error."


_TYPES = {400: "invalid_request_error", 431: "invalid_request_error", 504: "timeout_error"}


def error_json(status: int, code: str, message: str) -> bytes:
    kind = _TYPES.get(status, "api_error")
    return orjson.dumps({"type": "error", "error": {"message": message, "type": kind, "param": None, "code": code}})


Handler = Callable[[Inbound], Awaitable[Answer]]

KEEPALIVE_SECONDS = 75.0  # an idle connection (or one whose request head never completes) is closed after this
_SWEEP_SECONDS = 5.0
_READ_LIMIT = 2**16  # a request body held unread above this pauses reading the connection
_QUEUE_HIGH, _QUEUE_LOW = 8, 2  # pipelined requests waiting: above HIGH stop reading until LOW
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Rejected:
    """A request the parser refused: answered in order, then the connection closes."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


def rejection_answer(status: int, exc: BaseException | None) -> tuple[Response, str]:
    """The error JSON answer for what the parser refused or a handler raised, and its code (for the log)."""
    status, code, text = rejection(status, exc)
    return Response(status=status, body=error_json(status, code, text)), code


class Connection(BaseProtocol):
    """One caller's connection: parses what arrives, queues whole request heads, serves them in order."""

    def __init__(self, door: FrontDoor):
        loop = asyncio.get_running_loop()
        parser = HttpRequestParser(
            self,
            loop,
            _READ_LIMIT,
            max_line_size=MAX_FIELD_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            payload_exception=RequestPayloadError,
            auto_decompress=False,
        )
        super().__init__(loop, parser)
        self._door = door
        self._queue: deque[tuple[RawRequestMessage | _Rejected, StreamReader | None]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no more requests are read: an answer ends it (a rejection, an upgrade, drain)
        self._queue_paused = False
        self.remote: str | None = None
        self.idle_since: float | None = loop.time()  # None while a request is being served

    # -- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.remote = str(peer[0])
        self._door.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._parser is None:
            return
        try:
            messages, upgraded, _tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            self._closing = True
            self._queue.append((_Rejected(exc), None))
            self._wake()
            return
        if upgraded:
            self._closing = True  # the bytes after an upgrade request are another protocol's: none is spoken here
        if messages:
            self._queue.extend(messages)
            self._wake()
            if len(self._queue) > _QUEUE_HIGH and not self._queue_paused:
                self._queue_paused = True
                self._pause_reading_for_buffer()

    def eof_received(self) -> bool:
        return False  # a caller that stops sending is gone: close, which cancels what it asked for

    def connection_lost(self, exc: BaseException | None) -> None:
        self._door.connections.discard(self)
        parser, self._parser = self._parser, None
        if parser is not None:
            with contextlib.suppress(HttpProcessingError):  # a body cut short: its reader has the error already
                parser.feed_eof()
        for _, payload in self._queue:
            if payload is not None:
                payload.set_exception(ConnectionResetError("the caller went away"))
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()  # the handler's upstream request is closed with it
        super().connection_lost(exc)

    # -- the requests --------------------------------------------------------------------------------------

    def closes_after(self, request: Inbound) -> bool:
        return self._closing or self._door.draining or request.should_close

    async def drain(self) -> None:
        await self._drain_helper()

    def _wake(self) -> None:
        if self._task is None:
            self.idle_since = None
            self._task = self._loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self._queue and self.transport is not None:
                message, payload = self._queue.popleft()
                if self._queue_paused and len(self._queue) <= _QUEUE_LOW:
                    self._queue_paused = False
                    self._resume_reading_for_buffer()
                if not await self._one(message, payload):
                    self._close()
                    return
        finally:
            self._task = None
            self.idle_since = self._loop.time()
        if self._closing or self._door.draining:
            self._close()

    async def _one(self, message: RawRequestMessage | _Rejected, payload: StreamReader | None) -> bool:
        """Serve one request; True when the connection can carry another."""
        transport = self.transport
        assert transport is not None
        if isinstance(message, _Rejected):
            refusal, code = rejection_answer(400, message.exc)
            log.info(
                "rejected a malformed request", extra={"status": refusal.status, "code": code, "remote": self.remote}
            )
            transport.write(refusal.encode(connection="close"))
            return False
        assert payload is not None
        if message.version >= HttpVersion11 and message.headers.get("Expect", "").lower() == "100-continue":
            transport.write(_CONTINUE)
        request = Inbound(message, payload, self, self.remote)
        answer: Answer
        try:
            answer = await self._door.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("unhandled error serving a request", exc_info=exc)  # our own bug: keep the traceback
            answer, _ = rejection_answer(500, exc)
        if self.transport is None:
            return False
        if request.started is not None and answer is not request.started:
            # The handler failed after its stream's head went out: nothing more can be said on this connection.
            log.error("a handler answered again after starting a stream; closing the connection")
            return False
        if isinstance(answer, StreamResponse):
            if not answer.prepared:
                log.error("a handler returned a stream it never started")
                self.transport.write(rejection_answer(500, None)[0].encode(connection="close"))
                return False
            # A stream not written to its end is cut: only closing the connection tells the caller.
            return answer.ended and answer.chunked and not self.closes_after(request) and payload.is_eof()
        # A body the handler did not read to its end is still arriving: the connection cannot carry another.
        keep = not self.closes_after(request) and payload.is_eof()
        # HTTP/1.1 keeps a connection unless told; an HTTP/1.0 caller that asked for keep-alive is told it holds.
        connection = ("keep-alive" if request.version < HttpVersion11 else None) if keep else "close"
        self.transport.write(answer.encode(connection=connection, head_only=request.method == "HEAD"))
        return keep

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close_if_idle(self, now: float, limit: float) -> None:
        since = self.idle_since
        if since is not None and now - since >= limit:
            self._closing = True
            self._close()


class FrontDoor:
    """One listener: the asyncio server, its connections, the idle sweep, and drain."""

    def __init__(self, handler: Handler, *, keepalive_timeout: float = KEEPALIVE_SECONDS):
        self.handler = handler
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[Connection] = set()
        self.draining = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self), host, port, backlog=backlog
        )
        for sock in self._server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                self.port = int(sock.getsockname()[1])
                break
        self._sweeper = asyncio.create_task(self._sweep())
        return self.port

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(_SWEEP_SECONDS, self.keepalive_timeout))
            now = asyncio.get_running_loop().time()
            for connection in list(self.connections):
                connection.close_if_idle(now, self.keepalive_timeout)

    def stop_listening(self) -> None:
        """No new connections; idle ones close now, busy ones after their answer."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        now = asyncio.get_running_loop().time()
        for connection in list(self.connections):
            connection.close_if_idle(now, 0.0)

    async def close(self) -> None:
        """Stop listening and close every connection (what is in flight is cancelled)."""
        self.stop_listening()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
