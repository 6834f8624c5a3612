"""One request/response exchange and the protocol-independent ways of answering it.

Wire-protocol modules describe their endpoints as ``Route`` objects and build payloads; everything about
*how* the answer leaves the socket (extra headers, truncation, resets, outcome bookkeeping) lives here.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from re import Pattern
from typing import Any

import orjson
from aiohttp import web

from . import content
from .requestlog import RequestRecord, lower_headers
from .script import DEFAULT_BEHAVIOUR, Behaviour

# Header names that carry the API key across the protocols the mock speaks.
_KEY_HEADERS = ("api-key", "x-api-key", "x-goog-api-key")
# Upper bound on waiting for queued bytes to reach the client before a scripted reset.
_RESET_FLUSH_TIMEOUT = 1.0


class ApiError(Exception):
    """A request the protocol rejects; rendered in that protocol's error format."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


@dataclass(frozen=True, slots=True)
class Dialect:
    """What the shared pipeline needs to know about a wire protocol."""

    name: str
    error_body: Callable[[ApiError], dict[str, Any]]
    model_of: Callable[[web.Request, Any], str | None]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: Pattern[str]  # searched in the path, so any prefix (Azure deployments, gateways) works
    handler: Callable[[Exchange], Awaitable[web.StreamResponse]]
    dialect: Dialect
    prompt: Callable[[Any], str] | None = None  # a generation endpoint: the prompt text the engine simulates


def api_key_of(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for name in _KEY_HEADERS:
        if value := request.headers.get(name):
            return value
    return None


def echo_document(request: web.BaseRequest, body: Any) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": lower_headers(request),
        "body": body,
    }


@dataclass(slots=True)
class Exchange:
    request: web.Request
    record: RequestRecord
    dialect: Dialect
    body: Any = None
    behaviour: Behaviour = DEFAULT_BEHAVIOUR
    response: web.StreamResponse | None = None

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.behaviour.headers)
        if self.behaviour.retry_after is not None:
            seconds = self.behaviour.retry_after
            headers["Retry-After"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
        return headers

    async def send_json(self, payload: object, status: int = 200) -> web.StreamResponse:
        # A scripted body replaces a successful answer's JSON, verbatim (to play an upstream that sends junk).
        data = (
            self.behaviour.body.encode() if self.behaviour.body is not None and status < 400 else orjson.dumps(payload)
        )
        headers = {"Content-Type": "application/json", **self.response_headers()}
        if self.behaviour.reset_after_chunks is not None:
            return await self._send_truncated(status, headers, data)
        response = web.Response(status=status, body=data, headers=headers)
        self.response = response
        await response.prepare(self.request)
        await response.write_eof()
        self.record.finish("completed" if status < 400 else "error")
        return response

    async def send_error(self, error: ApiError) -> web.StreamResponse:
        return await self.send_json(self.dialect.error_body(error), error.status)

    async def send_scripted_error(self) -> web.StreamResponse:
        status = self.behaviour.status or 500
        scripted = self.behaviour.error
        if isinstance(scripted, dict):
            return await self.send_json(scripted, status)  # a full body, sent verbatim
        return await self.send_error(ApiError(status, scripted or _default_message(status)))

    async def reset(self) -> None:
        """Abort the connection with a TCP reset, the way a crashed upstream or a proxy drops it."""
        transport = self.request.transport
        if transport is not None:
            await _flush(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # Zero linger makes the close an RST instead of an orderly FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.record.finish("reset")

    async def _send_truncated(self, status: int, headers: dict[str, str], data: bytes) -> web.StreamResponse:
        # A non-stream answer has no chunks: 0 resets before any byte, more sends the headers and half the body.
        if self.behaviour.reset_after_chunks:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(data)
            self.response = response
            await response.prepare(self.request)
            await response.write(data[: len(data) // 2])
        await self.reset()
        return self.response or web.Response(status=status)


async def _flush(transport: asyncio.Transport) -> None:
    # abort() drops whatever is still buffered; let already-written chunks reach the client first. Polled,
    # because a transport signals "buffer empty" only to its protocol, which belongs to aiohttp.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _RESET_FLUSH_TIMEOUT
    while transport.get_write_buffer_size() and not transport.is_closing() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)


def _default_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"Scripted mock error: {status} {phrase}"


def answer_pieces(exchange: Exchange, limit: int | None) -> tuple[list[str], bool]:
    """The text chunks of an Anthropic or Gemini answer and whether `limit` tokens cut it (a scripted tool call
    alone has none, the way models usually answer with one)."""
    behaviour = exchange.behaviour
    if behaviour.echo:
        text = orjson.dumps(echo_document(exchange.request, exchange.body)).decode()
    elif behaviour.content is not None:
        text = behaviour.content
    elif behaviour.tool_call is not None:
        return [], False
    else:
        text = content.DEFAULT_TEXT
    return content.truncate(content.pieces(text, behaviour.chunks), limit)
