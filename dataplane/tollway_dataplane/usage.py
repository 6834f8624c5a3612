"""Token usage in one internal shape, whatever protocol reported it; estimates are marked as such."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    estimated: bool = True
    reasoning_tokens: int = 0  # the part of output_tokens the model spent reasoning (already counted in them)
    cache_creation_tokens: int = 0  # input tokens written to the provider's prompt cache (Anthropic; in input_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_from_openai(data: Any) -> Usage | None:
    """Read an OpenAI `usage` object (chat, completions or embeddings)."""
    if not isinstance(data, dict):
        return None
    prompt = data.get("prompt_tokens")
    if not isinstance(prompt, int):
        return None
    completion = data.get("completion_tokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=completion if isinstance(completion, int) else 0,
        cached_input_tokens=_detail(data, "prompt_tokens_details", "cached_tokens"),
        estimated=False,
        reasoning_tokens=_detail(data, "completion_tokens_details", "reasoning_tokens"),
    )


def usage_from_responses(data: Any) -> Usage | None:
    """Read a Responses API `usage` object (input/output tokens and their details)."""
    if not isinstance(data, dict) or not isinstance(data.get("input_tokens"), int):
        return None
    output = data.get("output_tokens")
    return Usage(
        input_tokens=data["input_tokens"],
        output_tokens=output if isinstance(output, int) else 0,
        cached_input_tokens=_detail(data, "input_tokens_details", "cached_tokens"),
        estimated=False,
        reasoning_tokens=_detail(data, "output_tokens_details", "reasoning_tokens"),
    )


def _detail(data: dict[str, Any], group: str, name: str) -> int:
    details = data.get(group)
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    if isinstance(value, dict):
        return sum(_text_length(v) for k, v in value.items() if k in ("text", "content", "input", "arguments"))
    return 0


def estimate_input_tokens(body: Mapping[str, Any]) -> int:
    """A cheap upper-leaning estimate (about 4 characters per token) when the provider reports nothing."""
    chars = _text_length(body.get("messages")) + _text_length(body.get("prompt")) + _text_length(body.get("input"))
    chars += _text_length(body.get("system"))
    return max(1, (chars + 3) // 4)
