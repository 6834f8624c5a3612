"""Anthropic's answer vocabulary in OpenAI terms: stop reasons and token usage."""

from __future__ import annotations

from typing import Any

from ..usage import Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_from_anthropic(data: Any) -> Usage | None:
    """Anthropic's input_tokens leaves out cache reads and writes; OpenAI's prompt_tokens counts them all."""
    if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
        return None
    read = _count(data, "cache_read_input_tokens")
    written = _count(data, "cache_creation_input_tokens")
    return Usage(
        input_tokens=_count(data, "input_tokens") + read + written,
        output_tokens=_count(data, "output_tokens"),
        cached_input_tokens=read,
        cache_creation_tokens=written,
        estimated=False,
    )
