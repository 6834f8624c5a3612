"""Gemini's answer vocabulary in OpenAI terms: candidate parts, finish reasons and token usage."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from ..usage import Usage
from .chat import tool_call

# Finish (and prompt block) reasons that mean the answer was withheld by a filter.
FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "OTHER_SAFETY"}
)


def finish_reason(reason: Any, has_tool_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    # Gemini ends a function-calling turn with STOP; OpenAI callers look for tool_calls.
    return "tool_calls" if has_tool_calls else "stop"


def _count(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_gemini(data: Any, estimated: bool = False) -> Usage | None:
    """promptTokenCount already includes cached tokens; thinking is billed as output, so it is counted there."""
    if not isinstance(data, dict) or not isinstance(data.get("promptTokenCount"), int):
        return None
    return Usage(
        input_tokens=_count(data, "promptTokenCount") + _count(data, "toolUsePromptTokenCount"),
        output_tokens=_count(data, "candidatesTokenCount") + _count(data, "thoughtsTokenCount"),
        cached_input_tokens=_count(data, "cachedContentTokenCount"),
        estimated=estimated,
        reasoning_tokens=_count(data, "thoughtsTokenCount"),
    )


def first_candidate(data: dict[str, Any]) -> dict[str, Any] | None:
    candidates = data.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    return None


def block_reason(data: dict[str, Any]) -> str | None:
    """Why the prompt itself was refused (then there are no candidates)."""
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    return reason if isinstance(reason, str) else None


def read_parts(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The visible text and the function calls (as OpenAI tool calls) of one candidate."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue  # thought summaries are not part of the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part))
    return "".join(texts), calls


def _tool_call(part: dict[str, Any]) -> dict[str, Any]:
    function = part["functionCall"]
    # Gemini often sends no id; OpenAI callers need one to answer the call, and the name travels with the result.
    call_id = function.get("id") if isinstance(function.get("id"), str) else f"call_{secrets.token_hex(12)}"
    arguments = orjson.dumps(function.get("args") or {}).decode()
    call = tool_call(call_id, str(function.get("name") or ""), arguments)
    if isinstance(part.get("thoughtSignature"), str):
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call
