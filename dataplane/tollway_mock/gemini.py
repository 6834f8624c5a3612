"""The Gemini protocol: `POST .../models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.

Scripting as for OpenAI. The usage override speaks OpenAI names: prompt_tokens sets promptTokenCount,
completion_tokens candidatesTokenCount, cached_tokens cachedContentTokenCount (part of the prompt count, as
Gemini reports it). finish_reason sets the candidate's finishReason ("SAFETY" withholds the text);
block_reason blocks the prompt itself: promptFeedback.blockReason and no candidates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from . import content, sse
from .exchange import ApiError, Dialect, Exchange, Route, answer_pieces
from .script import Behaviour

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MODEL = re.compile(r"/models/([^/:]+):")
_WITHHELD = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"})


def error_body(error: ApiError) -> dict[str, Any]:
    status = _STATUSES.get(error.status, "INTERNAL" if error.status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": error.status, "message": error.message, "status": status}}


def model_of(request: web.Request, _body: Any) -> str | None:
    found = _MODEL.search(request.path)
    return found.group(1) if found else None


DIALECT = Dialect("gemini", error_body, model_of)


async def generate_content(exchange: Exchange) -> web.StreamResponse:
    return await _answer(exchange, stream=False)


async def stream_generate_content(exchange: Exchange) -> web.StreamResponse:
    if exchange.request.query.get("alt") != "sse":
        raise ApiError(400, "The mock serves streamGenerateContent with alt=sse only.")
    return await _answer(exchange, stream=True)


ROUTES = (
    Route("POST", re.compile(r"/models/[^/:]+:generateContent$"), generate_content, DIALECT),
    Route("POST", re.compile(r"/models/[^/:]+:streamGenerateContent$"), stream_generate_content, DIALECT),
)


async def _answer(exchange: Exchange, stream: bool) -> web.StreamResponse:
    body = exchange.body
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ApiError(400, "* GenerateContentRequest.contents: contents is not specified")
    model = model_of(exchange.request, body) or ""
    behaviour = exchange.behaviour
    prompt_tokens = content.estimate_tokens(_prompt_chars(body))
    base: dict[str, Any] = {"modelVersion": model, "responseId": f"mock-{exchange.record.id}"}

    if behaviour.block_reason is not None:
        feedback = {"blockReason": behaviour.block_reason}
        answer = {"promptFeedback": feedback, "usageMetadata": _usage(behaviour, prompt_tokens, 0), **base}
        if stream:
            return await sse.stream(exchange, [sse.Event.json(answer, "trailer")])
        return await exchange.send_json(answer, behaviour.success_status)

    config = body.get("generationConfig")
    limit = config.get("maxOutputTokens") if isinstance(config, dict) else None
    pieces, cut = answer_pieces(exchange, limit if isinstance(limit, int) else None)
    call = behaviour.tool_call
    reason = behaviour.finish_reason or ("MAX_TOKENS" if cut else "STOP")
    if reason in _WITHHELD:
        pieces, call = [], None
    output = len(pieces) + (content.estimate_tokens(len(call.arguments)) if call is not None else 0)
    usage = _usage(behaviour, prompt_tokens, output)
    final_parts = [{"functionCall": {"name": call.name, "args": call.input}}] if call is not None else []

    if stream:
        return await sse.stream(exchange, _events(base, pieces, final_parts, reason, prompt_tokens, usage))
    parts = ([{"text": "".join(pieces)}] if pieces else []) + final_parts
    answer = {"candidates": [_candidate(parts, reason)], **base}
    if usage is not None:
        answer["usageMetadata"] = usage
    return await exchange.send_json(answer, behaviour.success_status)


def _candidate(parts: list[dict[str, Any]], reason: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if parts:
        candidate["content"] = {"parts": parts, "role": "model"}
    if reason is not None:
        candidate["finishReason"] = reason
    return candidate


def _events(
    base: dict[str, Any],
    pieces: list[str],
    final_parts: list[dict[str, Any]],
    reason: str,
    prompt_tokens: int,
    usage: dict[str, int] | None,
) -> Iterator[sse.Event]:
    # Like Gemini: every event is a whole response; the last one carries the finishReason and the final usage.
    running = {"promptTokenCount": prompt_tokens} if usage is not None else None
    for piece in pieces:
        answer = {"candidates": [_candidate([{"text": piece}], None)], **base}
        if running is not None:
            answer["usageMetadata"] = {**running, "totalTokenCount": prompt_tokens}
        yield sse.Event.json(answer)
    last = {"candidates": [_candidate(final_parts, reason)], **base}
    if usage is not None:
        last["usageMetadata"] = usage
    yield sse.Event.json(last, "content" if final_parts else "trailer")


def _usage(behaviour: Behaviour, prompt_tokens: int, output_tokens: int) -> dict[str, int] | None:
    if behaviour.omit_usage:
        return None
    override = behaviour.usage or {}
    prompt = override.get("prompt_tokens", prompt_tokens)
    output = override.get("completion_tokens", output_tokens)
    usage = {"promptTokenCount": prompt, "candidatesTokenCount": output}
    if override.get("cached_tokens"):
        usage["cachedContentTokenCount"] = override["cached_tokens"]
    usage["totalTokenCount"] = override.get("total_tokens", prompt + output)
    return usage


def _prompt_chars(body: dict[str, Any]) -> int:
    system = body.get("systemInstruction")
    contents = [system, *body["contents"]] if isinstance(system, dict) else body["contents"]
    return sum(
        len(part["text"])
        for item in contents
        if isinstance(item, dict) and isinstance(item.get("parts"), list)
        for part in item["parts"]
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
