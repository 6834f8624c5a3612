"""Anthropic Messages stream events as OpenAI chat.completion.chunk events.

Usage is exact: message_start reports the input side (input, cache read, cache write tokens), message_delta the
cumulative output (and, from newer API versions, cumulative input counts that then take precedence).
"""

from __future__ import annotations

from typing import Any

import orjson

from ..sse import EventSplitter, event_data
from ..usage import Usage
from .anthropic_wire import finish_reason
from .base import StreamFailed, StreamState
from .chat import DONE_EVENT, ChunkWriter, error_event, obj

# Anthropic's error types as HTTP statuses, so an early stream error is classified like a status (429, 5xx).
_ERROR_STATUS = {"rate_limit_error": 429, "overloaded_error": 529, "api_error": 500, "timeout_error": 504}
_USAGE_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "output_tokens")


class AnthropicStream:
    __slots__ = ("_counts", "_ended", "_failed", "_finish", "_splitter", "_tools", "_wants_usage", "_writer", "state")

    def __init__(self, model: str, wants_usage: bool) -> None:
        self._splitter = EventSplitter()
        self._writer = ChunkWriter(model)
        self._wants_usage = wants_usage
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._counts: dict[str, int] = {}
        self._finish: str | None = None
        self._ended = False
        self._failed = False
        self.state = StreamState()

    def feed(self, data: bytes) -> list[bytes]:
        return self._events(self._splitter.feed(data))

    def finish(self) -> list[bytes]:
        rest = self._splitter.rest()
        out = self._events([rest]) if rest.strip() else []
        if self._ended or self._failed:
            return out
        if self._finish is not None:  # message_delta arrived, message_stop did not: the answer is whole
            return out + self._close()
        self._failed = True
        message = "The upstream stream ended before the answer was complete."
        return [*out, error_event(message, code="upstream_stream_incomplete")]

    def _events(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            try:
                message = orjson.loads(event_data(event))
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict):
                out.extend(self._handle(message))
        return out

    def _handle(self, message: dict[str, Any]) -> list[bytes]:
        kind = message.get("type")
        if kind == "content_block_delta":
            return self._delta(message)
        if kind == "content_block_start":
            return self._block_start(message)
        if kind == "message_start":
            start = obj(message.get("message"))
            self._writer.completion_id = str(start.get("id") or "")
            self._writer.model = str(start.get("model") or self._writer.model)
            self._take_usage(start.get("usage"))
            return []  # the role chunk waits for the first content, so time to first token means a token
        if kind == "message_delta":
            delta = obj(message.get("delta"))
            self._take_usage(message.get("usage"), final=True)
            self._finish = finish_reason(delta.get("stop_reason"))
            return self._writer.finish(self._finish)
        if kind == "message_stop":
            return self._close()
        if kind == "error":
            self._failed = True
            error = obj(message.get("error"))
            text = str(error.get("message") or "upstream stream error")
            error_type = str(error.get("type") or "api_error")
            if not self._writer.started:
                raise StreamFailed(_ERROR_STATUS.get(error_type, 502), text, error_type)
            return [error_event(text, error_type)]
        return []  # ping, content_block_stop and event types added later

    def _block_start(self, message: dict[str, Any]) -> list[bytes]:
        block = obj(message.get("content_block"))
        if block.get("type") == "tool_use":
            index = self._tools[message.get("index", -1)] = len(self._tools)
            self.state.content_events += 1
            return self._writer.tool_start(index, str(block.get("id") or ""), str(block.get("name") or ""))
        if block.get("type") == "text" and block.get("text"):
            self.state.content_events += 1
            return self._writer.text(str(block["text"]))
        return self._writer.start()  # thinking and other blocks carry nothing an OpenAI caller can read

    def _delta(self, message: dict[str, Any]) -> list[bytes]:
        delta = obj(message.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            out = self._writer.text(str(delta.get("text") or ""))
        elif kind == "input_json_delta" and message.get("index") in self._tools:
            out = self._writer.tool_arguments(self._tools[message["index"]], str(delta.get("partial_json") or ""))
        else:
            return []  # thinking, signature and citation deltas
        if out:
            self.state.content_events += 1
            self._update_estimate()
        return out

    def _take_usage(self, usage: Any, final: bool = False) -> None:
        if isinstance(usage, dict):
            for name in _USAGE_FIELDS:
                value = usage.get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    self._counts[name] = value  # counts are cumulative: the latest wins
        self.state.usage = self._usage(estimated=not final)
        if not final:
            self._update_estimate()

    def _update_estimate(self) -> None:
        # Until message_delta, output is a floor from the content seen, so a caller who leaves mid-stream is counted.
        usage = self.state.usage
        if usage is not None and usage.estimated:
            usage.output_tokens = max(self._counts.get("output_tokens", 0), self.state.content_events)

    def _usage(self, estimated: bool) -> Usage:
        read = self._counts.get("cache_read_input_tokens", 0)
        written = self._counts.get("cache_creation_input_tokens", 0)
        return Usage(
            input_tokens=self._counts.get("input_tokens", 0) + read + written,
            output_tokens=self._counts.get("output_tokens", 0),
            cached_input_tokens=read,
            estimated=estimated,
        )

    def _close(self) -> list[bytes]:
        if self._ended:
            return []
        self._ended = True
        out = self._writer.start()
        if self._finish is None:  # message_stop without message_delta: the stop reason is unknown
            self._finish = "stop"
            out.extend(self._writer.finish(self._finish))
        usage = self.state.usage
        if usage is not None and self._wants_usage:
            out.append(self._writer.usage(usage))
        out.append(DONE_EVENT)
        return out
