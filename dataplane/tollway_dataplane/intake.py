"""Where a request's body enters the gateway: read within the size limit, decoded, parsed, checked field by field.

Everything a caller sends is judged here, once, before any other code walks it; every problem is a 400 (or 413,
415) naming the field, so nothing past this point has to defend against a malformed body. The rules live in
their own modules: `content_coding` (which Content-Encodings are accepted), `json_depth` (how deep a body may
nest) and `fields` (types and ranges of the fields, per entry protocol).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp.web import RequestPayloadError
from tollway_contract.model import DEFAULT_MAX_BODY_BYTES

from .call import CHAT, COMPLETIONS, EMBEDDINGS, Call, NativeBody
from .content_coding import decoder_for
from .errors import GatewayError
from .fields import OPENAI_NUMBERS, check_chat_messages, check_model, check_numbers, check_stop, invalid
from .json_depth import check_depth
from .messages import Inbound


async def read_body(request: Inbound, limit: int = DEFAULT_MAX_BODY_BYTES) -> bytes:
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
        except RequestPayloadError:
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


def make_call(endpoint: str, body: dict[str, Any], raw: bytes, native: NativeBody | None = None) -> Call:
    model = check_model(body.get("model"))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid("stream", "a boolean", stream)
    if endpoint == CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid("messages", "a non-empty array", messages)
        check_chat_messages(messages)
    elif endpoint == COMPLETIONS:
        if not isinstance(body.get("prompt"), str | list):
            raise invalid("prompt", "a string or an array", body.get("prompt"))
    elif endpoint == EMBEDDINGS:
        if not isinstance(body.get("input"), str | list):
            raise invalid("input", "a string or an array", body.get("input"))
        stream = False
    check_numbers(body, OPENAI_NUMBERS)
    check_stop(body)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options", "an object", options)
    wants_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
    return Call(
        endpoint=endpoint,
        body=body,
        raw=raw,
        model=model,
        stream=bool(stream),
        client_wants_usage=wants_usage,
        native=native,
    )
