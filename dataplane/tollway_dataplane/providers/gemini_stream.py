"""Gemini `streamGenerateContent?alt=sse` events as OpenAI chat.completion.chunk events.

Each Gemini event is a whole GenerateContentResponse: text parts become content deltas, a function call arrives
whole and becomes one tool call delta. Gemini has no end marker: the finish chunk goes out with the finishReason,
the usage chunk and [DONE] when the upstream stream ends. Usage is the last usageMetadata seen.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..sse import EventSplitter, event_data
from .base import StreamState
from .chat import DONE_EVENT, ChunkWriter, error_event
from .gemini_wire import block_reason, finish_reason, first_candidate, read_parts, usage_from_gemini


class GeminiStream:
    __slots__ = ("_failed", "_finish", "_splitter", "_tool_calls", "_wants_usage", "_writer", "state")

    def __init__(self, model: str, wants_usage: bool) -> None:
        self._splitter = EventSplitter()
        self._writer = ChunkWriter(model)
        self._wants_usage = wants_usage
        self._tool_calls = 0
        self._finish: str | None = None
        self._failed = False
        self.state = StreamState()

    def feed(self, data: bytes) -> list[bytes]:
        return self._events(self._splitter.feed(data))

    def finish(self) -> list[bytes]:
        rest = self._splitter.rest()
        out = self._events([rest]) if rest.strip() else []
        if self._failed:
            return out
        if self._finish is None:
            self._failed = True
            message = "The upstream stream ended before the answer was complete."
            return [*out, error_event(message, code="upstream_stream_incomplete")]
        usage = self.state.usage
        if usage is not None:
            usage.estimated = False
            if self._wants_usage:
                out.append(self._writer.usage(usage))
        out.append(DONE_EVENT)
        return out

    def _events(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            try:
                data = orjson.loads(event_data(event))
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict) and not self._failed:
                out.extend(self._response(data))
        return out

    def _response(self, data: dict[str, Any]) -> list[bytes]:
        error = data.get("error")
        if isinstance(error, dict):
            self._failed = True
            return [error_event(str(error.get("message") or "upstream stream error"), code=error.get("status"))]
        usage = usage_from_gemini(data.get("usageMetadata"), estimated=True)
        if usage is not None:
            self.state.usage = usage
        if not self._writer.completion_id and isinstance(data.get("responseId"), str):
            self._writer.completion_id = data["responseId"]
        if isinstance(data.get("modelVersion"), str):
            self._writer.model = data["modelVersion"]
        candidate = first_candidate(data)
        if candidate is None:
            if block_reason(data) and self._finish is None:
                self._finish = "content_filter"
                return self._writer.finish(self._finish)
            return []
        text, calls = read_parts(candidate)
        out = self._writer.text(text)
        for call in calls:
            out.extend(self._writer.delta({"tool_calls": [{"index": self._tool_calls, **call}]}))
            self._tool_calls += 1
        self.state.content_events += int(bool(text)) + len(calls)
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and self._finish is None:
            self._finish = finish_reason(reason, self._tool_calls > 0)
            out.extend(self._writer.finish(self._finish))
        return out
