"""The rules the intake and the front door apply, one module at a time (the reliability tier drives them whole)."""

from __future__ import annotations

import orjson
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidURLError, LineTooLong
from tollway_dataplane import front_door, inbound_headers

# -- headers --------------------------------------------------------------------------------------------------


def surrogates(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # what aiohttp makes of header bytes


def test_client_keys_are_the_bytes_sent() -> None:
    assert inbound_headers.client_key({"Authorization": "Bearer sk-a"}) == b"sk-a"
    assert inbound_headers.client_key({"api-key": surrogates(b"k\xff")}) == b"k\xff"
    assert inbound_headers.client_key({"Authorization": "Basic x", "x-api-key": " sk-b "}) == b"sk-b"
    assert inbound_headers.client_key({"x-api-key": "  "}) is None


def test_request_ids_are_kept_only_when_safe_to_log_and_echo() -> None:
    assert inbound_headers.request_id({"x-request-id": "req-1"}) == "req-1"
    for bad in (surrogates(b"\xff"), "has space", "x" * 129, "é"):
        assert inbound_headers.request_id({"x-request-id": bad}) is None


def test_text_headers_replace_what_is_not_utf8() -> None:
    view = inbound_headers.TextHeaders({"X-Tenant": surrogates(b"a\xffb")})
    assert view.get("X-Tenant") == "a\ufffdb" and view["X-Tenant"].encode()
    assert view.get("missing", "") == ""


# -- the front door -------------------------------------------------------------------------------------------


def test_parser_rejections_never_carry_the_request_bytes() -> None:
    cases = [
        (LineTooLong(b"Bearer sk-secret...", 8190), 431),
        (BadHttpMessage("Too many headers received"), 431),
        (BadHttpMessage("Invalid header value char:\n\n  b'Authorization: sk-secret\\x01'\n  ^"), 400),
        (BadHttpMessage("Transfer-Encoding can't be present with Content-Length:\n\n  b'sk-secret'"), 400),
        (InvalidURLError("Invalid char in url path:\n\n  b'/sk-secret'"), 400),
        (BadHttpMethod(error="Invalid method encountered:\n\n  b'sk-secret'"), 400),
        (BadHttpMessage("sk-secret"), 400),
    ]
    for exc, status in cases:
        got, code, message = front_door.rejection(400, exc)
        assert got == status and "secret" not in message and "secret" not in code
        body = orjson.loads(front_door.error_json(got, code, message))
        assert body["type"] == "error" and body["error"]["message"] == message  # OpenAI and Anthropic SDKs read it


def test_handler_failures_are_500_and_timeouts_504() -> None:
    assert front_door.rejection(500, RuntimeError("boom"))[0] == 500
    assert front_door.rejection(504, TimeoutError())[0] == 504
