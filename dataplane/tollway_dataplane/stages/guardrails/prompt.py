"""The request's texts as the guardrails read them, and how masks are written back into the call.

Every entry is one canonical call, so one reader serves chat completions, `/v1/messages` and later entries: the
chat messages (string contents and text parts, each under the scope of its role: system and developer are
`system`, tool and function results are `tool`), or the prompt of a legacy completion and the input of an
embedding (both `user`). Masks go back through `Call.with_texts`, which applies them to every body the call
carries (the native one of a pass-through too), so a secret never reaches a provider in either form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...call import CHAT, COMPLETIONS, EMBEDDINGS, Call

_SCOPE_OF_ROLE = {
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
    "assistant": "assistant",
}

Item = tuple[str, str]  # (scope, text)


def scope_of(role: str) -> str:
    return _SCOPE_OF_ROLE.get(role, "user")


def request_items(call: Call) -> list[Item]:
    if call.endpoint == CHAT:
        items = []
        for message in call.body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            scope = scope_of(str(message.get("role", "")))
            content = message.get("content")
            if isinstance(content, str):
                items.append((scope, content))
            elif isinstance(content, list):
                items.extend(
                    (scope, part["text"])
                    for part in content
                    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                )
        return items
    field = "prompt" if call.endpoint == COMPLETIONS else "input" if call.endpoint == EMBEDDINGS else None
    value = call.body.get(field) if field else None
    if isinstance(value, str):
        return [("user", value)]
    if isinstance(value, list):
        return [("user", v) for v in value if isinstance(v, str)]
    return []


def last_user_text(call: Call) -> str:
    """What judges of the answer see as the prompt."""
    for scope, text in reversed(request_items(call)):
        if scope == "user":
            return text
    return ""


def with_rewritten(call: Call, rewrite: Callable[[str, str], str]) -> Call:
    """The call with every text passed through `rewrite(scope, text)`."""
    if call.endpoint == CHAT:
        return call.with_texts(lambda role, text: rewrite(scope_of(role), text))
    field = "prompt" if call.endpoint == COMPLETIONS else "input"
    value: Any = call.body.get(field)
    if isinstance(value, str):
        value = rewrite("user", value)
    elif isinstance(value, list):
        value = [rewrite("user", v) if isinstance(v, str) else v for v in value]
    return call.with_body({**call.body, field: value})
