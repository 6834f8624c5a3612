"""Partition, then match: what makes two requests share a cached answer.

The partition is a hash of everything that must be equal for an answer to be reusable at all: the scope (the
consumer, or the whole route), the route and rule, the caller's protocol, the requested model, and the request
minus its last turn: system prompt, earlier turns, tools, tool choice, response format and every parameter that
changes output (temperature, top_p, seed, max tokens, n, stop, logprobs, ...). Only fields that shape how the
answer is delivered, not what it says, are left out. Exact matching adds the last turn to the partition; semantic
matching compares the last user turn's embedding inside the partition and nowhere else, so no similarity can ever
reach across consumers, models or conversations.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

# Delivery, accounting and the caller's own bookkeeping: equal answers whatever these say.
_DELIVERY_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "safety_identifier"}
)
_VERSION = b"tollway-cache-1"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256(_VERSION)
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def split_last_turn(body: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The request without its last message, and that message."""
    messages = body.get("messages") or []
    rest = {k: v for k, v in body.items() if k not in _DELIVERY_FIELDS}
    rest["messages"] = messages[:-1]
    return rest, messages[-1] if messages else None


def partition(*, scope: str, route: str, rule: str, protocol: str, body: dict[str, Any]) -> str:
    rest, _ = split_last_turn(body)
    return _digest(scope.encode(), route.encode(), rule.encode(), protocol.encode(), _canonical(rest))


def exact_key(partition_key: str, body: dict[str, Any]) -> str:
    _, last = split_last_turn(body)
    return _digest(partition_key.encode(), _canonical(last))


def last_user_text(body: dict[str, Any]) -> str | None:
    """The text semantic matching compares: the last message's text when the caller wrote it, else None
    (a tool result or an assistant prefill is matched exactly only)."""
    messages = body.get("messages") or []
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) == len(content):  # images and files: exact matching only
            return "\n".join(t for t in texts if isinstance(t, str))
    return None


def prompt_cache_key(consumer: str, body: dict[str, Any]) -> str:
    """OpenAI's `prompt_cache_key`: requests of one consumer with one system prompt land on the same cache shard."""
    system = [
        m.get("content")
        for m in body.get("messages") or ()
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    return "tw-" + _digest(consumer.encode(), _canonical(system))[:32]
