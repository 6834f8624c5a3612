"""The guardrails' view of a native Responses answer: a `/responses` request an OpenAI or Azure OpenAI pool served
as sent, so the answer is a response object or the Responses event stream rather than chat completions.

Texts are the `output_text` parts of the response's message items, and the `response.output_text.delta` events of
a stream, read by dialects.ResponsesText (which prompt capture shares). Unlike chat chunks, a Responses stream
says its text twice: `response.output_text.done`, `response.content_part.done`, `response.output_item.done` and
the terminal response repeat it whole, and that is where clients read it (the OpenAI SDK's final response, an
agent's finished items, the response the gateway stores for `previous_response_id`). So each stream gets a
`ResponsesStream` that sees every event the caller is sent, keeps the text each content part was sent as, and
where the window changed a part makes the repeats say what the deltas said. Streams nobody masked go out byte
for byte.

A blocked answer uses the API's own words: status `incomplete` with `incomplete_details.reason` `content_filter`.
A blocked stream closes the items the caller saw open (as `incomplete`, with the text they were sent), adds the
message as a message item of its own (`onBlock: completion`), and ends with `response.incomplete`, numbered on
from the last event sent and carrying the id the stream began with, as the OpenAI SDK requires.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson

from ...dialects import (
    CONTENT_FILTER,
    RESPONSE_ENDINGS,
    ResponsesText,
    event_json,
    loads_object,
    output_text_parts,
)

_BEGINNINGS = ("response.created", "response.in_progress")
# The kinds a stream view decodes; anything else (reasoning, annotations, refusals) passes undecoded.
_TRACKED = frozenset(
    {
        *_BEGINNINGS,
        *RESPONSE_ENDINGS,
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
    }
)
# Escaped text cannot hold this unescaped, so a match is the event's own number.
_SEQUENCE = re.compile(rb'"sequence_number":\s*(\d+)')

PartKey = tuple[str, int]  # (item id, content index)


class ResponsesView(ResponsesText):
    def rewrite_body(self, body: bytes, texts: list[str]) -> bytes:
        data = loads_object(body) or {}
        for part, text in zip(output_text_parts(data.get("output") or []), texts, strict=False):
            part["text"] = text
        return orjson.dumps(data)

    def blocked_body(self, body: bytes, message: str | None) -> bytes:
        # Every output item goes: tool calls and reasoning were not checked, and the answer is refused whole.
        output = [_message(_new_id("msg"), message, "incomplete")] if message else []
        return orjson.dumps(_blocked(loads_object(body) or {}, output))

    def stream(self) -> ResponsesStream:
        return ResponsesStream()


class ResponsesStream:
    """One native Responses stream as the caller has been sent it."""

    __slots__ = ("_altered", "_arguments", "_items", "_last", "_open", "_open_parts", "_parts", "_response", "_texts")

    def __init__(self) -> None:
        self._response: dict[str, Any] | None = None  # the response the stream began with (no output yet)
        self._last = -1  # the last sequence number sent
        self._items: dict[int, dict[str, Any]] = {}  # output index -> the item as sent (added, then done)
        self._open: dict[int, None] = {}  # output indexes added and not done, in order
        self._parts: dict[str, dict[int, dict[str, Any]]] = {}  # content parts of the open items, by item id
        self._open_parts: set[PartKey] = set()  # content parts added and not done
        self._texts: dict[PartKey, list[str]] = {}  # each text part's deltas as sent
        self._altered: set[PartKey] = set()  # text parts the window changed: their repeats are rewritten
        self._arguments: dict[str, list[str]] = {}  # function call item id -> argument deltas sent

    def sent(self, event: bytes, text: str | None) -> bytes:
        kind = _kind(event)
        if kind and (kind not in _TRACKED or (kind in RESPONSE_ENDINGS and not self._altered)):
            found = _SEQUENCE.search(event)  # nothing to read or rewrite in it but its number
            self._last = max(self._last, int(found.group(1))) if found else self._last
            return event
        data = event_json(event)
        if data is None:
            return event
        sequence = data.get("sequence_number")
        if isinstance(sequence, int):
            self._last = max(self._last, sequence)
        return _sse(data) if self._read(str(data.get("type")), data, text) else event

    def _read(self, kind: str, data: dict[str, Any], text: str | None) -> bool:
        """Record what the event tells the caller; True when it was rewritten to say what the caller saw."""
        if kind == "response.output_text.delta":
            key = _part_key(data)
            if text is not None:
                data["delta"] = text
                self._altered.add(key)
            delta = data.get("delta")
            self._texts.setdefault(key, []).append(delta if isinstance(delta, str) else "")
            return text is not None
        if kind == "response.function_call_arguments.delta":
            delta = data.get("delta")
            self._arguments.setdefault(str(data.get("item_id")), []).append(delta if isinstance(delta, str) else "")
        elif kind in _BEGINNINGS:
            if self._response is None and isinstance(data.get("response"), dict):
                self._response = data["response"]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            index, item = data.get("output_index"), data.get("item")
            if isinstance(index, int) and isinstance(item, dict):
                self._items[index] = item
                if kind.endswith("added"):
                    self._open[index] = None
                    return False
                self._open.pop(index, None)
                self._parts.pop(str(item.get("id")), None)
                return self._rewrite_item(item)
        elif kind in ("response.content_part.added", "response.content_part.done"):
            key, part = _part_key(data), data.get("part")
            if isinstance(part, dict):
                self._parts.setdefault(key[0], {})[key[1]] = part
                if kind.endswith("added"):
                    self._open_parts.add(key)
                    return False
                self._open_parts.discard(key)
                if key in self._altered and part.get("type") == "output_text":
                    part["text"] = self._sent_text(key)
                    return True
        elif kind == "response.output_text.done":
            key = _part_key(data)
            if key in self._altered:
                data["text"] = self._sent_text(key)
                return True
        elif kind in RESPONSE_ENDINGS:  # the whole response again
            response = data.get("response")
            output = response.get("output") if isinstance(response, dict) else None
            items = output if isinstance(output, list) else []
            return any([self._rewrite_item(item) for item in items if isinstance(item, dict)])  # all, not the first
        return False

    def _rewrite_item(self, item: dict[str, Any]) -> bool:
        if not self._altered or item.get("type") != "message" or not isinstance(item.get("content"), list):
            return False
        changed = False
        for index, part in enumerate(item["content"]):
            key = (str(item.get("id")), index)
            if key in self._altered and isinstance(part, dict) and part.get("type") == "output_text":
                part["text"] = self._sent_text(key)
                changed = True
        return changed

    def _sent_text(self, key: PartKey) -> str:
        return "".join(self._texts.get(key, ()))

    # -- the blocked ending ------------------------------------------------------------------------------------

    def block_events(self, first_event: bytes | None, message: str | None) -> list[bytes]:
        out: list[bytes] = []
        response = self._response
        if response is None:  # the stream's beginning was held back with the blocked text: the caller has nothing
            first = event_json(first_event) if first_event is not None else None
            begun = first.get("response") if first is not None and first.get("type") in _BEGINNINGS else None
            response = begun if isinstance(begun, dict) else {"id": _new_id("resp"), "object": "response"}
            out.append(self._event("response.created", response={**response, "status": "in_progress"}))
        for index in list(self._open):
            out += self._close(index)
        if message:
            out += self._message_events(message)
        output = [self._items[i] for i in sorted(self._items)]
        out.append(self._event("response.incomplete", response=_blocked(response, output)))
        return out

    def _event(self, kind: str, **fields: Any) -> bytes:
        self._last += 1
        return _sse({"type": kind, "sequence_number": self._last, **fields})

    def _close(self, index: int) -> list[bytes]:
        """An item the caller saw open, closed as incomplete with what it was sent."""
        item = dict(self._items[index])
        item_id = str(item.get("id"))
        out: list[bytes] = []
        if item.get("type") == "message":
            parts = self._parts.pop(item_id, {})
            for content_index in sorted(parts):
                key = (item_id, content_index)
                if key not in self._open_parts:
                    continue
                part = parts[content_index] = dict(parts[content_index])
                where = {"item_id": item_id, "output_index": index, "content_index": content_index}
                if part.get("type") == "output_text":
                    part["text"] = self._sent_text(key)
                    out.append(self._event("response.output_text.done", **where, text=part["text"], logprobs=[]))
                out.append(self._event("response.content_part.done", **where, part=part))
            item["content"] = [parts[i] for i in sorted(parts)]
        elif item.get("type") == "function_call":
            item["arguments"] = "".join(self._arguments.get(item_id, ()))
            done = {"item_id": item_id, "output_index": index, "name": item.get("name"), "arguments": item["arguments"]}
            out.append(self._event("response.function_call_arguments.done", **done))
        if "status" in item:
            item["status"] = "incomplete"
        self._items[index] = item
        self._open.pop(index, None)
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def _message_events(self, message: str) -> list[bytes]:
        """The block's message as a message item of its own, after every item the caller saw."""
        index = max(self._items, default=-1) + 1
        item_id = _new_id("msg")
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        done = _message(item_id, message, "incomplete")
        self._items[index] = done
        return [
            self._event("response.output_item.added", output_index=index, item=_message(item_id, None, "in_progress")),
            self._event("response.content_part.added", **where, part=_text_part("")),
            self._event("response.output_text.delta", **where, delta=message, logprobs=[]),
            self._event("response.output_text.done", **where, text=message, logprobs=[]),
            self._event("response.content_part.done", **where, part=_text_part(message)),
            self._event("response.output_item.done", output_index=index, item=done),
        ]


def _blocked(response: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": CONTENT_FILTER}, "completed_at": None}
    return {**response, **incomplete, "output": output}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [_text_part(text)] if text is not None else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _part_key(data: dict[str, Any]) -> PartKey:
    index = data.get("content_index")
    return str(data.get("item_id")), index if isinstance(index, int) else 0


def _kind(event: bytes) -> str:
    """The event's type from its `event:` line, without decoding it (empty when it has none)."""
    if not event.startswith(b"event:"):
        return ""
    line = event[6 : event.find(b"\n")] if b"\n" in event else event[6:]
    return line.strip().decode(errors="replace")


def _sse(data: dict[str, Any]) -> bytes:
    return b"event: " + str(data.get("type")).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
