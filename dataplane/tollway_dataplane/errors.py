"""OpenAI-style JSON errors. Every failure a caller sees is one of these, with the right status."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from .messages import Response

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}


class GatewayError(Exception):
    """Raised anywhere on the request path; the handler turns it into the caller's JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type or _TYPES.get(status, "api_error")
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code)

    def response(self, extra_headers: Mapping[str, str] | None = None) -> Response:
        headers = {**(extra_headers or {}), **self.headers}
        return Response(status=self.status, body=self.body(), headers=headers)


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def sse_error_event(message: str, type: str = "upstream_error", code: str | None = None) -> bytes:
    """How a stream that fails after its first chunk ends: one error event, then the connection closes cleanly."""
    return b"data: " + error_body(message, type, code) + b"\n\n"
