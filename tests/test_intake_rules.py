"""The rules the intake and the front door apply, one module at a time (the reliability tier drives them whole)."""

from __future__ import annotations

from tollway_dataplane import inbound_headers

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
