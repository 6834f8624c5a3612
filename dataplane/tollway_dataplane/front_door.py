"""The HTTP layer under the gateway's dispatcher: what callers get when a request never reaches a handler.

aiohttp's HTTP parser rejects some requests before any handler runs (an oversized or malformed header, a bad
Content-Length, Content-Length together with Transfer-Encoding, bytes that are not allowed in the path, ...) and
answers them from `RequestHandler.handle_error` in plain text, with the parser's message, which quotes the
offending bytes: an `Authorization` value among them. The same method answers a handler that raised (500) or
timed out (504). `GatewayProtocol` replaces that method, so every such answer is error JSON built from the
exception's class alone and never from its message, and the log gets one line without the request's bytes.

The answer has the OpenAI error object plus a top-level `"type": "error"`, so it is also a valid Anthropic
error: the parser fails before the path is known, and both kinds of SDK read it.

`runner()` is how the process wires this in (a `web.AppRunner` whose server makes `GatewayProtocol`s), with the
listener settings that belong to the front door: header limits, no transparent request decompression (the
intake decides which content codings it accepts, see `content_coding`), and no `Server` header (it named the
framework and Python versions).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
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
from aiohttp.web_protocol import RequestHandler

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


class _Answer(web.Response):
    """A response prepared outside the application, so its prepare signal (which drops `Server`) never runs."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


class GatewayProtocol(RequestHandler):
    """aiohttp's connection handler, with the gateway's answer to requests no handler could take."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of a response is out already: the connection is broken (aiohttp's own contract).
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        status, code, text = rejection(status, exc)
        if status == 500:
            log.error("unhandled error serving a request", exc_info=exc)  # our own bug: keep the traceback
        else:
            log.info("rejected a malformed request", extra={"status": status, "code": code, "remote": request.remote})
        answer = _Answer(status=status, body=error_json(status, code, text), content_type="application/json")
        answer.force_close()
        return answer


class GatewayServer(web.Server):
    """aiohttp's low-level server, making `GatewayProtocol` connections."""

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An `AppRunner` whose server is a `GatewayServer` with everything aiohttp configured for the app."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return GatewayServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **base._kwargs,
        )


async def _drop_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall("Server", None)


def runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """The runner for one of the gateway's listeners."""
    app.on_response_prepare.append(_drop_server_header)
    return GatewayRunner(
        app,
        max_line_size=MAX_FIELD_BYTES,
        max_field_size=MAX_FIELD_BYTES,
        max_headers=MAX_HEADERS,
        auto_decompress=False,
        **kwargs,
    )
