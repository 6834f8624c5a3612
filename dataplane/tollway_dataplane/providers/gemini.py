"""Google Gemini API upstreams (`provider: gemini`): `POST {baseURL}/v1beta/models/{model}:generateContent`.

Chat completions only: embeddings (embedContent) are not translated; point an `openai-compatible` pool at
Gemini's OpenAI-compatible endpoint (`.../v1beta/openai`) for those. Requests are converted by
`gemini_request`, streams (`:streamGenerateContent?alt=sse`) by `gemini_stream`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from ..call import CHAT, Call
from ..pools import PoolKeyRuntime, PoolRuntime
from ..usage import Usage
from .base import ProviderError, UpstreamRequest, answer_object
from .chat import bad_request, completion
from .gemini_request import generate_request
from .gemini_stream import GeminiStream
from .gemini_wire import block_reason, finish_reason, first_candidate, read_parts, usage_from_gemini
from .openai import error_from_body

# Gemini reports a status name (INVALID_ARGUMENT, ...) but no OpenAI-style type: the type follows the HTTP status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def model_url(base_url: str, model: str, stream: bool) -> str:
    # The documented base is the host; a base that already names the API version is used as it is.
    base = base_url if base_url.endswith(("/v1beta", "/v1")) else f"{base_url}/v1beta"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base}/models/{quote(model.removeprefix('models/'), safe='')}:{method}"


class GeminiTranslator:
    def build_request(self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str) -> UpstreamRequest:
        if call.endpoint != CHAT:
            raise bad_request(
                f"The model {call.model!r} is served by the Gemini generateContent API, which has no "
                f"/{call.endpoint} endpoint here; use /chat/completions (for embeddings, route to an "
                "openai-compatible pool on Gemini's OpenAI-compatible endpoint).",
                "unsupported_endpoint",
            )
        headers = {"Content-Type": "application/json", **dict(pool.config.headers)}
        if key is not None:
            headers["x-goog-api-key"] = key.value
        if call.stream:
            headers["Accept"] = "text/event-stream"
        body = orjson.dumps(generate_request(call.chat_body()))
        return UpstreamRequest(url=model_url(pool.config.base_url, model, call.stream), headers=headers, body=body)

    def translate_response(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        data = answer_object(body)
        usage = usage_from_gemini(data.get("usageMetadata"))
        candidate = first_candidate(data)
        if candidate is None:
            text: str | None = None
            calls: list[dict[str, Any]] = []
            reason = "content_filter" if block_reason(data) else "stop"
        else:
            text, calls = read_parts(candidate)
            reason = finish_reason(candidate.get("finishReason"), bool(calls))
        out = completion(
            completion_id=str(data.get("responseId") or ""),
            model=str(data.get("modelVersion") or call.model),
            text=text,
            tool_calls=calls,
            finish_reason=reason,
            usage=usage,
        )
        return out, usage

    def translate_error(self, status: int, body: bytes) -> ProviderError:
        try:
            data: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, list) and data:  # the non-SSE stream endpoint wraps its error in an array
            data = data[0]
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            kind = _ERROR_TYPES.get(status, "upstream_error" if status >= 500 else "invalid_request_error")
            code = error.get("status") if isinstance(error.get("status"), str) else None
            return ProviderError(status=status, message=error["message"], type=kind, code=code)
        return error_from_body(status, body)

    def stream(self, call: Call) -> GeminiStream:
        return GeminiStream(call.model, wants_usage=call.client_wants_usage)
