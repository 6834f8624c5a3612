"""A provider's own Responses API stream, relayed as it is (native pass-through of a `/responses` request).

Events go out exactly as the provider framed them; only what the gateway needs is read: the usage in the
terminal event (`response.completed`, `response.incomplete`, `response.failed`), found by a substring search so
the other events are never decoded, and whether the stream ended (whole, or with the provider's own error).
A stream whose very first event is an error has told the caller nothing yet, so the attempt fails and the
gateway may fall back to another pool.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..answer import StreamInterrupted
from ..sse import EventSplitter, event_data
from ..usage import usage_from_responses
from .base import StreamFailed, StreamState

# Markers of the events that end a stream: the three terminal responses, and an error event (the provider's own
# word on a stream it broke off; the caller needs no second one from the gateway).
_TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed", b'"type":"error"', b"event: error")
_ENDINGS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})
_FAILURES = frozenset({"error", "response.failed"})


def _payload(event: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(event_data(event))
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _failure(data: dict[str, Any]) -> StreamFailed:
    error = data.get("error") if data.get("type") == "error" else (data.get("response") or {}).get("error")
    error = error if isinstance(error, dict) else data  # the OpenAI API puts code and message at the top
    code = str(error.get("code") or "")
    message = str(error.get("message") or "the upstream stream failed")
    status = 429 if "rate_limit" in code else 400 if "invalid" in code else 500
    return StreamFailed(status, message, "rate_limit_error" if status == 429 else "upstream_error")


class ResponsesStream:
    __slots__ = ("_complete", "_splitter", "state")

    def __init__(self) -> None:
        self._splitter = EventSplitter()
        self._complete = False
        self.state = StreamState()

    def feed(self, data: bytes) -> list[bytes]:
        events = self._splitter.feed(data)
        if events and self.state.content_events == 0:
            first = _payload(events[0])
            if first is not None and first.get("type") in _FAILURES:
                raise _failure(first)
        for event in events:
            if not self._complete and any(marker in event for marker in _TERMINAL):
                self._terminal(event)
        self.state.content_events += len(events)
        return events

    def _terminal(self, event: bytes) -> None:
        data = _payload(event)
        if data is None or data.get("type") not in _ENDINGS:
            return  # the marker was inside some text
        self._complete = True
        response = data.get("response")
        usage = usage_from_responses(response.get("usage")) if isinstance(response, dict) else None
        if usage is not None:
            self.state.usage = usage

    def finish(self) -> list[bytes]:
        if not self._complete:
            raise StreamInterrupted("ended before the answer was complete")
        return []
