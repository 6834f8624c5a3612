"""How deeply a request body may nest: checked once, where the body is parsed.

Everything that walks or re-encodes a body (the model rewrite, usage injection, protocol translation, the token
estimate, prompt capture) recurses, in Python or in orjson, which refuses to encode beyond 254 levels. Real
requests nest a few levels (a tool's JSON schema a few dozen), so a body deeper than `MAX_DEPTH` is refused with
a 400 naming where it goes too deep, and no code past the intake has to care.
"""

from __future__ import annotations

from typing import Any

from .errors import GatewayError

MAX_DEPTH = 128  # containers, the body itself counting as 1; far below orjson's and Python's recursion limits
_CONTAINERS = (dict, list)
_SHOWN_STEPS = 4  # of the path to the offending value, in the message


def check_depth(body: dict[str, Any], raw: bytes) -> None:
    """Raise a 400 when `body` (parsed from `raw`) nests containers deeper than MAX_DEPTH."""
    # Nothing can nest deeper than it has brackets: most bodies are decided by two C-speed counts.
    if raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        return
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(body)
        for child in value.values() if type(value) is dict else value:
            if type(child) in _CONTAINERS:
                stack.append((child, depth + 1))


def _too_deep(body: dict[str, Any]) -> GatewayError:
    """The error, naming the first few steps of the path to a value nested too deep (searched again: rare)."""
    stack: list[tuple[Any, int, tuple[str, ...]]] = [(body, 1, ())]
    path: tuple[str, ...] = ()
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            path = where
            break
        items = value.items() if type(value) is dict else enumerate(value)
        for key, child in items:
            if type(child) in _CONTAINERS:
                step = f"[{key}]" if isinstance(key, int) else f".{key[:40]}"
                stack.append((child, depth + 1, (*where, step) if len(where) < _SHOWN_STEPS else where))
    field = "".join(path).lstrip(".") or "body"
    more = "..." if len(path) >= _SHOWN_STEPS else ""
    return GatewayError(
        400,
        f"'{field}{more}' nests deeper than {MAX_DEPTH} levels; send a flatter body.",
        "too_deeply_nested",
        type="invalid_request_error",
    )
