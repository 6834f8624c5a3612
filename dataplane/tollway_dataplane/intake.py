"""Where a request's body enters the gateway: read within the size limit, decoded, parsed, checked field by field.

Everything a caller sends is judged here, once, before any other code walks it; every problem is a 400 (or 413,
415) naming the field, so nothing past this point has to defend against a malformed body. The rules live in
their own modules: `content_coding` (which Content-Encodings are accepted) and `json_depth` (how deep a body may
nest).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from tollway_contract.model import DEFAULT_MAX_BODY_BYTES

from .content_coding import decoder_for
from .errors import GatewayError
from .json_depth import check_depth
from .providers.base import CHAT, COMPLETIONS, EMBEDDINGS, Call


async def read_body(request: web.Request, limit: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
    length = request.content_length
    if length is not None and length > limit:
        raise GatewayError(
            413, f"Request body of {length} bytes exceeds the limit of {limit} bytes.", "request_too_large"
        )
    decoder = decoder_for(request.headers.get("Content-Encoding"), limit)
    chunks = []
    size = 0
    while True:
        try:
            chunk = await request.content.readany()
        except web.RequestPayloadError:
            # The HTTP layer could not frame the body (a bad chunk size, a body shorter than its length).
            raise GatewayError(400, "The request body is malformed or incomplete.", "invalid_body") from None
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"Request body exceeds the limit of {limit} bytes.", "request_too_large")
        chunks.append(decoder.feed(chunk) if decoder is not None else chunk)
    if decoder is not None:
        chunks.append(decoder.finish())
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise GatewayError(400, "The request body is empty; send a JSON object.", "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"The request body is not valid JSON: {exc}.", "invalid_json") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "The request body must be a JSON object.", "invalid_json")
    check_depth(body, raw)
    return body


def _field_error(name: str, expected: str, value: Any) -> GatewayError:
    got = "null" if value is None else type(value).__name__
    return GatewayError(400, f"'{name}' must be {expected}, got {got}.", "invalid_type", type="invalid_request_error")


def make_call(endpoint: str, body: dict[str, Any], raw: bytes) -> Call:
    model = body.get("model")
    if model is None:
        raise GatewayError(400, "'model' is required.", "missing_model")
    if not isinstance(model, str) or not model:
        raise _field_error("model", "a non-empty string", model)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _field_error("stream", "a boolean", stream)
    if endpoint == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _field_error("messages", "a non-empty array", messages)
        if not all(isinstance(m, dict) for m in messages):
            raise GatewayError(400, "Every item of 'messages' must be an object.", "invalid_type")
    elif endpoint == COMPLETIONS:
        if not isinstance(body.get("prompt"), str | list):
            raise _field_error("prompt", "a string or an array", body.get("prompt"))
    elif endpoint == EMBEDDINGS:
        if not isinstance(body.get("input"), str | list):
            raise _field_error("input", "a string or an array", body.get("input"))
        stream = False
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _field_error(name, "an integer", value)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _field_error("stream_options", "an object", options)
    wants_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return Call(endpoint=endpoint, body=body, raw=raw, model=model, stream=bool(stream), client_wants_usage=wants_usage)
