"""A cached answer and the two ways it is served again: as it was sent, or converted.

A stream is stored as the events the caller was sent (role, content, reasoning and tool-call deltas, the finish
chunk, `[DONE]`), without the extra usage chunk, whose numbers are kept beside them; a hit on a stream replays
those events one by one, with a usage chunk when the new caller asks for one. A whole answer is stored as its
body. A request of the other kind converts instead of asking the provider again: a stream's events assemble into
one `chat.completion`, a body becomes a short stream. Conversion is defined for the OpenAI dialect; an entry in
another dialect only serves requests of its own kind; a native Anthropic answer (a `/messages` request served
by an Anthropic pool as sent) is kept and replayed as it came.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from ...answer import OPENAI
from ...providers.anthropic import ANTHROPIC
from ...providers.chat import DONE_EVENT, obj, openai_usage
from ...sse import event_data
from ...usage import Usage

FORMAT = 1


@dataclass(frozen=True, slots=True)
class Entry:
    created: float  # epoch seconds
    dialect: str
    model: str  # the model that answered
    usage: Usage
    cost: float | None  # what the answer cost when it was made (USD), for the "saved" metrics
    text: str  # the answer's text, for shadow comparisons
    body: bytes | None = None  # a whole answer
    events: tuple[bytes, ...] | None = None  # a stream, as sent (no usage-only chunk)

    @property
    def age(self) -> float:
        return time.time() - self.created

    def dumps(self) -> bytes:
        u = self.usage
        return orjson.dumps(
            {
                "format": FORMAT,
                "created": self.created,
                "dialect": self.dialect,
                "model": self.model,
                "usage": [u.input_tokens, u.output_tokens, u.cached_input_tokens],
                "cost": self.cost,
                "text": self.text,
                "body": self.body.decode() if self.body is not None else None,
                "events": [e.decode() for e in self.events] if self.events is not None else None,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> Entry | None:
        """None for anything this version cannot read (a newer format, a damaged value): treated as a miss."""
        try:
            data = orjson.loads(raw)
            if data.get("format") != FORMAT:
                return None
            input_tokens, output_tokens, cached = data["usage"]
            return cls(
                created=float(data["created"]),
                dialect=str(data["dialect"]),
                model=str(data["model"]),
                usage=Usage(input_tokens, output_tokens, cached, estimated=False),
                cost=data.get("cost"),
                text=str(data.get("text") or ""),
                body=data["body"].encode() if data.get("body") is not None else None,
                events=tuple(e.encode() for e in data["events"]) if data.get("events") is not None else None,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None

    def serves(self, stream: bool) -> bool:
        """Whether this entry can answer a request of that kind."""
        return self.dialect == OPENAI or (self.events is not None) == stream

    def as_body(self) -> bytes:
        if self.body is not None:
            return self.body
        assert self.events is not None
        return assemble(self.events, self.usage)

    def as_events(self, wants_usage: bool) -> list[bytes]:
        events = list(self.events) if self.events is not None else split(self.as_body())
        if wants_usage and self.dialect == OPENAI:
            done = events.pop() if events and event_data(events[-1]) == b"[DONE]" else None
            events.append(usage_chunk(events, self.usage))
            if done is not None:
                events.append(done)
        return events


def _chunks(events: tuple[bytes, ...] | list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        payload = event_data(event)
        if payload.startswith(b"{"):
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out.append(data)
    return out


def assemble(events: tuple[bytes, ...] | list[bytes], usage: Usage) -> bytes:
    """The `chat.completion` a stream of chunks amounts to: content, reasoning and tool calls per choice."""
    chunks = _chunks(events)
    first = chunks[0] if chunks else {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            state = choices.setdefault(index, {"content": [], "reasoning": [], "tools": {}, "finish": None})
            delta = obj(choice.get("delta"))
            if isinstance(delta.get("content"), str):
                state["content"].append(delta["content"])
            if isinstance(delta.get("reasoning_content"), str):
                state["reasoning"].append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    _merge_tool_call(state["tools"], call)
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]
    out_choices = []
    for index in sorted(choices):
        state = choices[index]
        message: dict[str, Any] = {"role": "assistant", "content": "".join(state["content"]) or None}
        if state["reasoning"]:
            message["reasoning_content"] = "".join(state["reasoning"])
        if state["tools"]:
            message["tool_calls"] = [state["tools"][i] for i in sorted(state["tools"])]
        elif message["content"] is None:
            message["content"] = ""
        out_choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": state["finish"]})
    body = {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", int(time.time())),
        "model": first.get("model", ""),
        "choices": out_choices,
        "usage": openai_usage(usage),
    }
    return orjson.dumps(body)


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", 0)
    call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    function = obj(delta.get("function"))
    if isinstance(function.get("name"), str):
        call["function"]["name"] += function["name"]
    if isinstance(function.get("arguments"), str):
        call["function"]["arguments"] += function["arguments"]


def split(body: bytes) -> list[bytes]:
    """A `chat.completion` as a short stream: a role chunk, the content, reasoning and tool calls, the finish."""
    data = orjson.loads(body)
    base = {"id": data.get("id", ""), "object": "chat.completion.chunk", "created": data.get("created", 0)}
    base["model"] = data.get("model", "")
    events = []

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        events.append(b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n")

    for choice in data.get("choices") or ():
        index = choice.get("index", 0)
        message = obj(choice.get("message"))
        chunk(index, {"role": "assistant", "content": ""})
        if message.get("reasoning_content"):
            chunk(index, {"reasoning_content": message["reasoning_content"]})
        if message.get("content"):
            chunk(index, {"content": message["content"]})
        for i, call in enumerate(message.get("tool_calls") or ()):
            chunk(index, {"tool_calls": [{"index": i, **call}]})
        chunk(index, {}, choice.get("finish_reason") or "stop")
    events.append(DONE_EVENT)
    return events


def usage_chunk(events: list[bytes], usage: Usage) -> bytes:
    chunks = _chunks(events[:1])
    first = chunks[0] if chunks else {}
    body = {
        "id": first.get("id", ""),
        "object": "chat.completion.chunk",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [],
        "usage": openai_usage(usage),
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


_ANTHROPIC_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def finish_reasons(body: bytes | None, events: list[bytes] | None, dialect: str = OPENAI) -> list[str | None]:
    """Every choice's finish reason in OpenAI's words (None where a choice has none, or a dialect the cache does
    not read): what decides whether an answer is kept."""
    if dialect == ANTHROPIC:
        return [_anthropic_finish(body, events)]
    if dialect != OPENAI:
        return [None]
    if body is not None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [None]
        return [c.get("finish_reason") for c in data.get("choices") or () if isinstance(c, dict)] or [None]
    reasons: dict[int, str | None] = {}
    for chunk in _chunks(events or []):
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                reasons[index] = choice.get("finish_reason") or reasons.get(index)
    return list(reasons.values()) or [None]


def _anthropic_finish(body: bytes | None, events: list[bytes] | None) -> str | None:
    """A Messages answer's stop reason: the body's, or the stream's message_delta (which message_stop follows)."""
    stop: object = None
    if body is not None:
        try:
            stop = orjson.loads(body).get("stop_reason")
        except (orjson.JSONDecodeError, AttributeError):
            return None
    else:
        for chunk in _chunks(events or []):
            if chunk.get("type") == "message_delta":
                stop = obj(chunk.get("delta")).get("stop_reason")
    return _ANTHROPIC_FINISH.get(stop) if isinstance(stop, str) else None


def is_usage_only(event: bytes) -> bool:
    """The extra chunk `include_usage` adds: usage and no choices."""
    if b'"usage"' not in event:
        return False
    chunks = _chunks([event])
    return bool(chunks) and not chunks[0].get("choices") and isinstance(chunks[0].get("usage"), dict)


def answer_text(body: bytes | None, events: list[bytes] | None) -> str:
    """The first choice's text, for comparing two answers."""
    try:
        data = orjson.loads(body if body is not None else assemble(events or [], Usage()))
    except orjson.JSONDecodeError:
        return ""
    choices = data.get("choices") or [{}]
    content = obj(choices[0].get("message")).get("content")
    return content if isinstance(content, str) else ""
