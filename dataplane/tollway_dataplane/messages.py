"""The gateway's HTTP messages: the request a handler reads and the answers it hands back to the front door.

These are the gateway's own types rather than aiohttp's `web.Request` and `web.Response`, which are heavy for
what the gateway uses of them: a request with lazy properties and its own dicts, a response with a multidict of
headers, a prepare signal, a writer object and a serialiser call. Here a request is
a few slots filled from the parser's message, and an answer's head (status line and headers) is one formatted
string, written with the body in one `transport.write`, so a whole answer costs one system call.

`Response` is a whole answer; the front door writes it once the handler returns. `StreamResponse` is written by
the handler as the answer is made (the relay's streams): the head goes out with the first write, then the body in
the response's framing (chunked on HTTP/1.1; on HTTP/1.0, which has no chunks, until the connection closes).
A header value is never allowed to end its line early: CR and LF in a name or value become spaces, so no text
that reached a header (a model name, a route name) can add a header or split the response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

from aiohttp import HttpVersion11

if TYPE_CHECKING:
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader
    from multidict import CIMultiDictProxy

JSON = "application/json"
EVENT_STREAM = "text/event-stream"


class Link(Protocol):
    """What an answer needs of the connection it is written to (the front door's connection)."""

    transport: asyncio.Transport | None

    def closes_after(self, request: Inbound) -> bool:
        """Whether the connection ends after this request's answer (the caller asked, or the gateway drains)."""
        ...

    async def drain(self) -> None:
        """Wait while the caller's side of the connection is not taking more (its send buffer is full)."""
        ...


class Inbound:
    """A request as the handler sees it: method, path (percent-decoded), version, headers, the peer's address,
    the body as a stream (`content`), and the connection's transport."""

    __slots__ = (
        "content",
        "headers",
        "link",
        "method",
        "path",
        "remote",
        "should_close",
        "started",
        "transport",
        "version",
    )

    def __init__(self, message: RawRequestMessage, payload: StreamReader, link: Link, remote: str | None):
        self.method = message.method
        self.path = message.url.path
        self.version = message.version
        self.headers: CIMultiDictProxy[str] = message.headers
        self.should_close = message.should_close  # the caller asked for it (HTTP/1.0 without keep-alive, close)
        self.content = payload
        self.link = link
        self.transport = link.transport
        self.remote = remote
        self.started: StreamResponse | None = None  # the answer being written, once one is prepared

    @property
    def content_length(self) -> int | None:
        """The declared body length (the parser has checked it is digits only), None when there is none."""
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None


class Response:
    """A whole answer: the front door writes its head and body in one go once the handler returns it."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        *,
        status: int = 200,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = JSON,
    ):
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type

    def encode(self, *, connection: str | None, head_only: bool = False) -> bytes:
        """The answer on the wire, with `connection` as its Connection header (None: none); `head_only` for HEAD,
        whose answer declares the body it does not carry."""
        framing = f"Content-Length: {len(self.body)}\r\n"
        head = encode_head(self.status, self.headers, self.content_type, framing, connection)
        return head if head_only else head + self.body


class StreamResponse:
    """An answer written as it is made. `prepare` fixes the head and the framing (chunked on HTTP/1.1; HTTP/1.0
    has no chunks, so there the body ends when the connection does); the first `write` sends the head with the
    first bytes. After that the body may also be written straight to the transport, each piece `frame`d."""

    __slots__ = ("_head", "_link", "chunked", "ended", "headers", "status")

    def __init__(self, *, status: int = 200, headers: Mapping[str, str] | None = None):
        self.status = status
        self.headers = headers
        self.chunked = False
        self.ended = False  # the whole body is written: the connection can carry another request
        self._head: bytes | None = None
        self._link: Link | None = None

    @property
    def prepared(self) -> bool:
        return self._link is not None

    async def prepare(self, request: Inbound) -> None:
        request.started = self
        link = self._link = request.link
        self.chunked = request.version >= HttpVersion11
        close = not self.chunked or link.closes_after(request)
        framing = "Transfer-Encoding: chunked\r\n" if self.chunked else ""
        self._head = encode_head(self.status, self.headers, EVENT_STREAM, framing, "close" if close else None)

    def frame(self, data: bytes) -> bytes:
        """A non-empty piece of the body in the response's framing."""
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    async def write(self, data: bytes) -> None:
        await self._send(self.frame(data) if data else b"")

    async def write_eof(self) -> None:
        if not self.ended:
            await self._send(b"0\r\n\r\n" if self.chunked else b"")  # the head too, if nothing was written yet
            self.ended = True

    async def _send(self, data: bytes) -> None:
        link = self._link
        assert link is not None, "write before prepare"
        transport = link.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the caller went away")
        if self._head is not None:
            data, self._head = self._head + data, None
        if data:
            transport.write(data)
            await link.drain()


Answer = Response | StreamResponse

_STATUS_LINES: dict[int, str] = {}
_date = ""
_date_second = 0


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {reason}\r\n"
    return line


def _date_header() -> str:
    """The Date header's value, formatted once a second rather than per answer."""
    global _date, _date_second
    second = int(time.time())
    if second != _date_second:
        _date_second = second
        _date = formatdate(second, usegmt=True)
    return _date


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def encode_head(
    status: int, headers: Mapping[str, str] | None, content_type: str | None, framing: str, connection: str | None
) -> bytes:
    """Status line and headers, with the framing header(s) given and the Connection header's value (`close` when
    the connection ends after this answer). Framing, Date and Connection are the front door's alone: handlers
    never set them."""
    lines = [_status_line(status), "Date: ", _date_header(), "\r\n"]
    if content_type is not None:
        lines += ("Content-Type: ", content_type, "\r\n")
    if headers:
        text = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        count = len(headers)
        if text.count("\n") != count or text.count("\r") != count:
            text = "".join([f"{_one_line(name)}: {_one_line(value)}\r\n" for name, value in headers.items()])
        lines.append(text)
    lines.append(framing)
    if connection is not None:
        lines += ("Connection: ", connection, "\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")
