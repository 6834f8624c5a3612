"""Anthropic Messages API upstreams (`provider: anthropic`): `POST {baseURL}/v1/messages`.

Chat completions only. The request is converted by `anthropic_request`, streams by `anthropic_stream`; this
module holds the translator, the whole-answer conversion, usage and errors. A request that came in through the
gateway's own `/messages` entry is not converted at all: it goes as the caller sent it (native pass-through, so
`cache_control`, thinking, server tools and fields added later survive), and its answer comes back unchanged
(`anthropic_native` reads the stream's usage on the way).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..call import CHAT, Call
from ..pools import PoolKeyRuntime, PoolRuntime
from ..usage import Usage
from .anthropic_native import AnthropicNativeStream
from .anthropic_request import messages_request
from .anthropic_stream import AnthropicStream
from .anthropic_wire import finish_reason, usage_from_anthropic
from .base import ProviderError, UpstreamRequest, answer_object
from .chat import bad_request, completion, tool_call
from .openai import error_from_body

API_VERSION = "2023-06-01"
ANTHROPIC = "anthropic"  # the dialect of a native pass-through answer (the /messages caller's own)


def messages_url(base_url: str) -> str:
    # The documented base is the host (https://api.anthropic.com); a base that already ends in /v1 works too.
    return f"{base_url}/messages" if base_url.endswith("/v1") else f"{base_url}/v1/messages"


def native(call: Call) -> bool:
    """Whether this call goes to the provider as the caller sent it (a `/messages` request)."""
    return call.native is not None and call.native.dialect.name == ANTHROPIC


class AnthropicTranslator:
    def build_request(self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str) -> UpstreamRequest:
        if native(call):
            return self._native_request(call, pool, key, model)
        if call.endpoint != CHAT:
            raise bad_request(
                f"The model {call.model!r} is served by the Anthropic Messages API, which has no /{call.endpoint} "
                "endpoint; use /chat/completions.",
                "unsupported_endpoint",
            )
        body = messages_request(call.chat_body(), model, call.stream)
        # Pool headers come after anthropic-version so a pool can pin another version or add anthropic-beta.
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION, **dict(pool.config.headers)}
        if key is not None:
            headers["x-api-key"] = key.value
        if call.stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamRequest(url=messages_url(pool.config.base_url), headers=headers, body=orjson.dumps(body))

    def _native_request(self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str) -> UpstreamRequest:
        """The caller's Messages request as it came (every field, unknown ones too), with the rule's model and the
        pool's key; the caller's anthropic-version and anthropic-beta headers ride along."""
        assert call.native is not None
        caller = dict(call.native.headers)
        headers = {
            "Content-Type": "application/json",
            "anthropic-version": caller.get("anthropic-version", API_VERSION),
        }
        if "anthropic-beta" in caller:
            headers["anthropic-beta"] = caller["anthropic-beta"]
        headers.update(dict(pool.config.headers))
        if key is not None:
            headers["x-api-key"] = key.value
        if call.stream:
            headers["Accept"] = "text/event-stream"
        body = orjson.dumps({**call.native.body, "model": model})
        return UpstreamRequest(url=messages_url(pool.config.base_url), headers=headers, body=body, dialect=ANTHROPIC)

    def translate_response(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        data = answer_object(body)
        if native(call):
            return body, usage_from_anthropic(data.get("usage"))
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block in data.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                texts.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                calls.append(tool_call(str(block.get("id") or ""), str(block.get("name") or ""), arguments))
            # thinking and redacted_thinking blocks have no place in an OpenAI message: left out
        usage = usage_from_anthropic(data.get("usage"))
        out = completion(
            completion_id=str(data.get("id") or ""),
            model=str(data.get("model") or call.model),
            text="".join(texts),
            tool_calls=calls,
            finish_reason=finish_reason(data.get("stop_reason")),
            usage=usage,
        )
        return out, usage

    def translate_error(self, status: int, body: bytes) -> ProviderError:
        # Anthropic's {"type": "error", "error": {"type", "message"}} is read by the shared OpenAI-shape reader.
        return error_from_body(status, body)

    def stream(self, call: Call) -> AnthropicStream | AnthropicNativeStream:
        if native(call):
            return AnthropicNativeStream()
        return AnthropicStream(call.model, wants_usage=call.client_wants_usage)
