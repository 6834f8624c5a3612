"""Per-request scripting: what the mock does instead of its default answer.

A behaviour comes from, in precedence order, a top-level ``"mock"`` object in the request body, an
``x-mock`` header holding a JSON object, or the first matching rule queued through the control API.
The first source present wins as a whole; sources are never merged, so a request that carries its own
script does not consume a queued rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

MOCK_HEADER = "x-mock"


class ScriptError(ValueError):
    """A behaviour or rule that cannot be understood; answered with a 400."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model answers with instead of (or after) its text."""

    name: str
    arguments: str  # a JSON object, as text: what OpenAI sends; the other protocols decode it

    @property
    def input(self) -> dict[str, Any]:
        value = orjson.loads(self.arguments)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Behaviour:
    status: int | None = None
    error: str | dict[str, Any] | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    chunks: int | None = None
    content: str | None = None
    usage: Mapping[str, int] | None = None
    omit_usage: bool = False
    reset_after_chunks: int | None = None
    stall_after_chunks: int | None = None  # streams: go silent after N content chunks, connection left open
    end_after_chunks: int | None = None  # streams: end cleanly after N content chunks, no finish reason, no [DONE]
    body: str | None = None  # whole answers: send this text verbatim as the body (invalid JSON, say)
    echo: bool = False
    tool_call: ToolCall | None = None
    finish_reason: str | None = None  # verbatim, in the protocol's own words (e.g. "SAFETY" for Gemini)
    block_reason: str | None = None  # Gemini only: the prompt is blocked with this reason, no candidates

    @property
    def is_error(self) -> bool:
        # An error message alone implies a 500, so scripts can stay short.
        if self.status is None:
            return self.error is not None
        return not 200 <= self.status < 300

    @property
    def success_status(self) -> int:
        return self.status if self.status is not None and 200 <= self.status < 300 else 200


DEFAULT_BEHAVIOUR = Behaviour()
# cached_tokens: cache reads (OpenAI prompt_tokens_details, Anthropic cache_read_input_tokens, Gemini
# cachedContentTokenCount); cache_creation_tokens: Anthropic's cache writes; reasoning_tokens: the reasoning part
# of the completion (OpenAI completion_tokens_details and the Responses API's output_tokens_details).
_USAGE_FIELDS = frozenset(
    {"prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "cache_creation_tokens", "reasoning_tokens"}
)
_BEHAVIOUR_FIELDS = frozenset(Behaviour.__dataclass_fields__)


def parse_behaviour(raw: object) -> Behaviour:
    """Validate strictly: a typo in a test script should fail loudly, not be ignored."""
    if not isinstance(raw, dict):
        raise ScriptError("behaviour must be a JSON object")
    unknown = set(raw) - _BEHAVIOUR_FIELDS
    if unknown:
        raise ScriptError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}")
    return Behaviour(
        status=_int(raw, "status", minimum=200, maximum=599),
        error=_error(raw.get("error")),
        retry_after=_number(raw, "retry_after"),
        headers=_headers(raw.get("headers")),
        headers_delay_ms=_number(raw, "headers_delay_ms") or 0.0,
        chunk_delay_ms=_number(raw, "chunk_delay_ms") or 0.0,
        chunks=_int(raw, "chunks"),
        content=_str(raw, "content"),
        usage=_usage(raw.get("usage")),
        omit_usage=_bool(raw, "omit_usage"),
        reset_after_chunks=_int(raw, "reset_after_chunks"),
        stall_after_chunks=_int(raw, "stall_after_chunks"),
        end_after_chunks=_int(raw, "end_after_chunks"),
        body=_str(raw, "body"),
        echo=_bool(raw, "echo"),
        tool_call=_tool_call(raw.get("tool_call")),
        finish_reason=_str(raw, "finish_reason"),
        block_reason=_str(raw, "block_reason"),
    )


@dataclass(frozen=True, slots=True)
class Match:
    model: str | None = None
    api_key: str | None = None
    path: str | None = None  # a suffix of the request path

    def accepts(self, *, model: str | None, api_key: str | None, path: str) -> bool:
        return (
            (self.model is None or self.model == model)
            and (self.api_key is None or self.api_key == api_key)
            and (self.path is None or path.endswith(self.path))
        )


@dataclass(slots=True)
class Rule:
    id: int
    match: Match
    behaviour: Behaviour
    remaining: int | None  # None: applies forever
    raw_behaviour: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        match = {
            k: v
            for k, v in (("model", self.match.model), ("api_key", self.match.api_key), ("path", self.match.path))
            if v is not None
        }
        return {"id": self.id, "match": match, "times_left": self.remaining, "behaviour": self.raw_behaviour}


class ScriptBook:
    """Rules queued through the control API, applied first-match in the order they were added."""

    def __init__(self) -> None:
        self._rules: list[Rule] = []
        self._ids = itertools.count(1)

    def add(self, raw: object) -> Rule:
        if not isinstance(raw, dict):
            raise ScriptError("rule must be a JSON object")
        unknown = set(raw) - {"match", "times", "behaviour"}
        if unknown:
            raise ScriptError(f"unknown rule field(s): {', '.join(sorted(unknown))}")
        raw_behaviour = raw.get("behaviour", {})
        behaviour = parse_behaviour(raw_behaviour)
        times = _int(raw, "times")
        remaining = 1 if times is None else (times or None)  # times 0 means forever
        rule = Rule(next(self._ids), _match(raw.get("match")), behaviour, remaining, raw_behaviour)
        self._rules.append(rule)
        return rule

    def take(self, *, model: str | None, api_key: str | None, path: str) -> Behaviour | None:
        # No await between lookup and decrement, so concurrent requests cannot both take a last use.
        for rule in self._rules:
            if rule.match.accepts(model=model, api_key=api_key, path=path):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return rule.behaviour
        return None

    def clear(self) -> int:
        count = len(self._rules)
        self._rules.clear()
        return count

    def snapshot(self) -> list[dict[str, Any]]:
        return [rule.to_json() for rule in self._rules]


def resolve(
    body: object, header: str | None, book: ScriptBook, *, model: str | None, api_key: str | None, path: str
) -> Behaviour:
    if isinstance(body, dict) and body.get("mock") is not None:
        return _labelled("mock", body["mock"])
    if header is not None:
        try:
            raw = orjson.loads(header)
        except orjson.JSONDecodeError as exc:
            raise ScriptError(f"{MOCK_HEADER} header is not valid JSON") from exc
        return _labelled(f"{MOCK_HEADER} header", raw)
    return book.take(model=model, api_key=api_key, path=path) or DEFAULT_BEHAVIOUR


def _labelled(source: str, raw: object) -> Behaviour:
    try:
        return parse_behaviour(raw)
    except ScriptError as exc:
        raise ScriptError(f"{source}: {exc}") from exc


def _match(raw: object) -> Match:
    if raw is None:
        return Match()
    if not isinstance(raw, dict):
        raise ScriptError("match must be a JSON object")
    unknown = set(raw) - {"model", "api_key", "path"}
    if unknown:
        raise ScriptError(f"unknown match field(s): {', '.join(sorted(unknown))}")
    return Match(model=_str(raw, "model"), api_key=_str(raw, "api_key"), path=_str(raw, "path"))


def _int(raw: dict[str, Any], key: str, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    # bool is an int subclass; `true` is never a sensible count.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScriptError(f"{key} must be an integer")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ScriptError(f"{key} must be {bound}")
    return value


def _number(raw: dict[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{key} must be a non-negative number")
    return float(value)


def _str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        raise ScriptError(f"{key} must be a string")
    return value


def _bool(raw: dict[str, Any], key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ScriptError(f"{key} must be a boolean")
    return value


def _error(value: object) -> str | dict[str, Any] | None:
    if value is None or isinstance(value, str | dict):
        return value
    raise ScriptError("error must be a string or a JSON object")


def _headers(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScriptError("headers must be a JSON object")
    headers = {}
    for name, header in value.items():
        if isinstance(header, bool) or not isinstance(header, str | int | float):
            raise ScriptError(f"header {name!r} must be a string or a number")
        headers[name] = str(header)
    return headers


def _tool_call(value: object) -> ToolCall | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ScriptError("tool_call must be a JSON object")
    unknown = set(value) - {"name", "arguments"}
    if unknown:
        raise ScriptError(f"unknown tool_call field(s): {', '.join(sorted(unknown))}")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ScriptError("tool_call.name must be a non-empty string")
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError as exc:
            raise ScriptError("tool_call.arguments must be a JSON object or its text") from exc
    if not isinstance(arguments, dict):
        raise ScriptError("tool_call.arguments must be a JSON object or its text")
    return ToolCall(name, orjson.dumps(arguments).decode())


def _usage(value: object) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ScriptError("usage must be a JSON object")
    unknown = set(value) - _USAGE_FIELDS
    if unknown:
        raise ScriptError(f"unknown usage field(s): {', '.join(sorted(unknown))}")
    return {key: count for key in value if (count := _int(value, key)) is not None}
