"""The rules the intake and the front door apply, one module at a time (the reliability tier drives them whole)."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidURLError, LineTooLong
from tollway_dataplane import content_coding, fields, front_door, inbound_headers, json_depth
from tollway_dataplane.errors import GatewayError

# -- content codings ------------------------------------------------------------------------------------------


def decode(header: str, chunks: list[bytes], limit: int = 1 << 20) -> bytes:
    decoder = content_coding.decoder_for(header, limit)
    assert decoder is not None
    return b"".join(decoder.feed(c) for c in chunks) + decoder.finish()


def test_gzip_and_both_kinds_of_deflate_decode_in_any_chunking() -> None:
    body = b'{"model": "m"}' * 50
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for header, packed in (
        ("gzip", gzip.compress(body)),
        ("x-gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", raw.compress(body) + raw.flush()),
    ):
        assert decode(header, [packed]) == body
        assert decode(header, [packed[:1], packed[1:7], packed[7:]]) == body  # the first byte alone, too


def test_identity_needs_no_decoder_and_other_codings_are_415() -> None:
    assert content_coding.decoder_for(None, 10) is None
    assert content_coding.decoder_for("identity", 10) is None
    for coding in ("br", "zstd", "gzip, br", "compress"):
        with pytest.raises(GatewayError) as caught:
            content_coding.decoder_for(coding, 10)
        assert caught.value.status == 415 and "gzip" in caught.value.message


@pytest.mark.parametrize(
    "header, chunks, why",
    [
        ("gzip", [b'{"model": "m"}'], "does not decode"),
        ("deflate", [b"\x00\x01not deflate at all"], "does not decode"),
        ("gzip", [gzip.compress(b"x" * 100)[:20]], "truncated"),
        ("gzip", [gzip.compress(b"x") + b"trailing"], "data after the end"),
        ("deflate", [b"x"], "truncated"),
    ],
)
def test_a_body_that_does_not_decode_is_400(header: str, chunks: list[bytes], why: str) -> None:
    with pytest.raises(GatewayError) as caught:
        decode(header, chunks)
    assert caught.value.status == 400 and why in caught.value.message


def test_the_limit_applies_to_the_decoded_size() -> None:
    bomb = gzip.compress(b"\0" * (5 << 20))  # about 5 KB on the wire
    with pytest.raises(GatewayError) as caught:
        decode("gzip", [bomb], limit=1 << 20)
    assert caught.value.status == 413
    assert len(decode("gzip", [bomb], limit=5 << 20)) == 5 << 20


# -- nesting --------------------------------------------------------------------------------------------------


def test_nesting_up_to_the_limit_passes_and_beyond_names_the_path() -> None:
    limit = json_depth.MAX_DEPTH
    ok = orjson.loads(b'{"a":' + b"[" * (limit - 1) + b"]" * (limit - 1) + b"}")
    json_depth.check_depth(ok, orjson.dumps(ok))
    raw = b'{"model":"m","messages":[{"content":' + b"[" * limit + b"]" * limit + b"}]}"
    with pytest.raises(GatewayError) as caught:
        json_depth.check_depth(orjson.loads(raw), raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith("'messages[0].content[0]...' nests deeper than 128 levels")


def test_many_brackets_side_by_side_are_not_depth() -> None:
    wide = {"input": [[1, 2]] * 5000}
    json_depth.check_depth(wide, orjson.dumps(wide))


# -- fields ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (
            {"max_tokens": -1_000_000_000_000},
            "'max_tokens' must be an integer from 1 to 1,000,000, got -1,000,000,000,000.",
        ),
        ({"max_tokens": 0}, "'max_tokens' must be an integer from 1 to 1,000,000, got 0."),
        ({"max_tokens": 1.5}, "'max_tokens' must be an integer, got float."),
        ({"max_completion_tokens": True}, "'max_completion_tokens' must be an integer, got bool."),
        ({"n": 129}, "'n' must be an integer from 1 to 128, got 129."),
        ({"temperature": 2.5}, "'temperature' must be a number from 0 to 2, got 2.5."),
        ({"top_p": "1"}, "'top_p' must be a number, got str."),
    ],
)
def test_numbers_out_of_range_or_of_the_wrong_type_name_the_field(body: dict[str, object], message: str) -> None:
    with pytest.raises(GatewayError) as caught:
        fields.check_numbers(body, fields.OPENAI_NUMBERS)
    assert caught.value.status == 400 and caught.value.message == message


def test_anthropic_ranges_are_anthropic_ones() -> None:
    fields.check_numbers({"temperature": 1.5}, fields.OPENAI_NUMBERS)
    with pytest.raises(GatewayError):
        fields.check_numbers({"temperature": 1.5}, fields.ANTHROPIC_NUMBERS)


def test_message_parts_the_gateway_reads_must_be_text() -> None:
    fields.check_chat_messages([{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]}])
    with pytest.raises(GatewayError) as caught:
        fields.check_chat_messages([{"role": "user", "content": [{"type": "text", "text": 5}]}])
    assert caught.value.message == "'messages[0].content[0].text' must be a string, got int."


@pytest.mark.parametrize("model", ["m\n", "m\x00", "x" * 257, "a\u2028b"])
def test_model_names_are_short_printable_text(model: str) -> None:
    with pytest.raises(GatewayError):
        fields.check_model(model)


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
