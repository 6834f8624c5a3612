"""An Anthropic Messages stream relayed as it is (native pass-through of a `/messages` request to an Anthropic pool).

Events go out exactly as the provider framed them: thinking blocks and signatures, server-tool results,
citations and event types added later all reach the caller. Only what the gateway needs is read, and only from
the few events that carry it, found by their event name without decoding the rest: usage from `message_start`
(input, cache read, cache creation) and `message_delta` (output, cumulative), and whether the stream ended
(`message_stop`, or the provider's own `error` event). A stream whose very first event is an error has told the
caller nothing yet, so the attempt fails and the gateway may fall back to another pool.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..answer import StreamInterrupted
from ..sse import EventSplitter, event_data
from ..usage import Usage
from .anthropic_wire import usage_from_anthropic
from .base import StreamFailed, StreamState

_START = b"event: message_start"
_DELTA = b"event: message_delta"
_STOP = b"event: message_stop"
_ERROR = b"event: error"


def _payload(event: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(event_data(event))
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _failure(data: dict[str, Any]) -> StreamFailed:
    found = data.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = str(error.get("type") or "api_error")
    status = {"rate_limit_error": 429, "overloaded_error": 529, "invalid_request_error": 400}.get(kind, 500)
    return StreamFailed(status, str(error.get("message") or "the upstream stream failed"), kind)


class AnthropicNativeStream:
    __slots__ = ("_complete", "_input", "_splitter", "state")

    def __init__(self) -> None:
        self._splitter = EventSplitter()
        self._complete = False
        self._input: dict[str, Any] = {}  # message_start's usage: input and cache counts
        self.state = StreamState()

    def feed(self, data: bytes) -> list[bytes]:
        events = self._splitter.feed(data)
        for event in events:
            if event.startswith(_START):
                message = _payload(event).get("message")
                usage = message.get("usage") if isinstance(message, dict) else None
                self._input = usage if isinstance(usage, dict) else {}
                self._usage(self._input, estimated=True)
            elif event.startswith(_DELTA):
                usage = _payload(event).get("usage")
                if isinstance(usage, dict):
                    self._usage({**self._input, **usage}, estimated=False)
            elif event.startswith(_STOP):
                self._complete = True
            elif event.startswith(_ERROR):
                if self.state.content_events == 0:
                    raise _failure(_payload(event))
                self._complete = True  # the provider's own word on a broken stream; no second one is needed
            self.state.content_events += 1
        return events

    def _usage(self, data: dict[str, Any], *, estimated: bool) -> None:
        usage = usage_from_anthropic(data)
        if usage is not None:
            usage.estimated = estimated
            self.state.usage = usage

    def finish(self) -> list[bytes]:
        if not self._complete:
            raise StreamInterrupted("ended before the answer was complete")
        return []


def native_usage(body: bytes) -> Usage | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return usage_from_anthropic(data.get("usage")) if isinstance(data, dict) else None
