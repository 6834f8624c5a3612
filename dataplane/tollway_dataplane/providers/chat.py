"""OpenAI chat shapes for translators of other protocols: request helpers, completions, stream chunks, usage.

The gateway's internal shape is OpenAI chat; the Anthropic and Gemini translators read the caller's OpenAI
request through these helpers and write their answers back with them, so both produce identical OpenAI JSON.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import GatewayError, sse_error_event
from ..usage import Usage

DONE_EVENT = b"data: [DONE]\n\n"


def obj(value: Any) -> dict[str, Any]:
    """The value when it is a JSON object, else an empty one: for reading optional nested fields."""
    return value if isinstance(value, dict) else {}


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    """The caller's request cannot be expressed for this provider: a 400 naming the field."""
    return GatewayError(400, message, code, type="invalid_request_error")


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a `data:<type>;base64,<data>` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, payload = url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        return None
    return header[: -len(";base64")] or "application/octet-stream", payload


def arguments_object(arguments: Any, field: str) -> dict[str, Any]:
    """OpenAI sends tool arguments as a JSON string; Anthropic and Gemini want the object itself."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        raise bad_request(f"'{field}' must be a JSON object encoded as a string.", "invalid_type")
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise bad_request(f"'{field}' is not valid JSON.", "invalid_json") from None
    if not isinstance(value, dict):
        raise bad_request(f"'{field}' must encode a JSON object.", "invalid_type")
    return value


def text_of(content: Any, field: str) -> str:
    """A message content that may only hold text (tool results, system prompts): a string or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"'{field}[{i}]' must be a text part.", "invalid_content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"'{field}' must be a string or an array of text parts.", "invalid_type")


def stop_list(stop: Any) -> list[str] | None:
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return list(stop)
    raise bad_request("'stop' must be a string or an array of strings.", "invalid_type")


def max_output_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens")
    return value if value is not None else body.get("max_tokens")


def single_choice(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request("'n' other than 1 is not supported by this provider.", "unsupported_parameter")


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def completion(
    *,
    completion_id: str,
    model: str,
    text: str | None,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    usage: Usage | None,
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = openai_usage(usage)
    return orjson.dumps(body)


error_event = sse_error_event  # one shape for every stream that ends in an error


class ChunkWriter:
    """Writes `chat.completion.chunk` events for one stream; the role chunk goes out before the first delta."""

    __slots__ = ("_created", "_started", "completion_id", "model")

    def __init__(self, model: str, completion_id: str = "") -> None:
        self.completion_id = completion_id
        self.model = model
        self._created = int(time.time())
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def _event(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = openai_usage(usage)
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> list[bytes]:
        out = self.start()
        out.append(self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]))
        return out

    def start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return [self._event([role])]

    def text(self, text: str) -> list[bytes]:
        return self.delta({"content": text}) if text else []

    def tool_start(self, index: int, call_id: str, name: str, arguments: str = "") -> list[bytes]:
        call = {"index": index, **tool_call(call_id, name, arguments)}
        return self.delta({"tool_calls": [call]})

    def tool_arguments(self, index: int, arguments: str) -> list[bytes]:
        return self.delta({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}) if arguments else []

    def finish(self, finish_reason: str) -> list[bytes]:
        return self.delta({}, finish_reason)

    def usage(self, usage: Usage) -> bytes:
        """The extra chunk `stream_options.include_usage` asks for: no choices, only usage."""
        return self._event([], usage)


def append_turn(turns: list[dict[str, Any]], role: str, items: list[dict[str, Any]], key: str) -> None:
    """Add items as a turn of `role`; consecutive turns of one role merge (both Anthropic and Gemini want that)."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][key].extend(items)
    else:
        turns.append({"role": role, key: items})
