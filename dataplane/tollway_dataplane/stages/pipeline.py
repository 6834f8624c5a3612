"""A rule's stages, built once per config snapshot, and the response filter chain of one request.

`Pipeline.run` passes the call through the request hooks in order and collects the filters of the stages it
passed; `FilterChain` applies filters in a fixed order on the way out. Both are only ever created for rules that
have a stage, or for requests that need a filter (capture, a caller's protocol); a plain route skips them.
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ..answer import Answer
from ..call import Call
from .base import EndStream, Exchange, ResponseFilter, Stage


@dataclass(frozen=True, slots=True)
class Pipeline:
    stages: tuple[Stage, ...]

    async def run(self, call: Call, exchange: Exchange) -> tuple[Call, Answer | None, list[ResponseFilter]]:
        """The call to forward (or a reply made by a stage) and the filters to apply, in request order."""
        filters: list[ResponseFilter] = []
        try:
            for stage in self.stages:
                step = await stage.on_request(call, exchange)
                if step.reply is not None:
                    return call, step.reply, filters  # the replying stage's own filter is left out
                if step.call is not None:
                    call = step.call
                if step.filter is not None:
                    filters.append(step.filter)
        except BaseException:
            # A later stage refused the request (a GatewayError) or it was cancelled: the filters handed out so
            # far are closed here, since nobody else will (a cache leader must still release its waiters).
            for f in filters:
                f.close(False)
            raise
        return call, None, filters


class FilterChain:
    """Filters applied in order (the stages' in reverse request order, then capture, then the caller's
    protocol); each filter's output is the next one's input, tails included."""

    __slots__ = ("_closed", "_filters", "ended")

    def __init__(self, filters: Sequence[ResponseFilter], answer: Answer):
        self._filters = tuple(filters)
        self._closed = 0  # filters[:_closed] are closed already (a later filter ended the stream)
        self.ended = False  # a filter ended the stream: send what `feed` returned, then stop reading
        for f in self._filters:
            f.start(answer)

    async def body(self, body: bytes) -> bytes:
        for f in self._filters:
            body = await f.body(body)
        return body

    async def feed(self, events: list[bytes]) -> list[bytes]:
        return await self._feed_from(self._closed, events)

    def feed_now(self, events: list[bytes]) -> list[bytes] | Coroutine[Any, Any, list[bytes]]:
        """The batch through every filter without waiting, or (a filter must wait, or ended the stream) the
        coroutine that finishes it, which the caller awaits: the filters before that one took the batch."""
        filters = self._filters
        for i in range(self._closed, len(filters)):
            try:
                out = filters[i].feed_now(events)
            except EndStream as end:
                return self._drain(self._ended_by(i), end.events)
            if out is None:
                return self._feed_from(i, events)
            events = out
        return events

    async def _feed_from(self, start: int, events: list[bytes]) -> list[bytes]:
        filters = self._filters
        for i in range(start, len(filters)):
            try:
                events = await filters[i].feed(events)
            except EndStream as end:
                return await self._drain(self._ended_by(i), end.events)
        return events

    def _ended_by(self, i: int) -> int:
        """Filter i ended the stream: the filters before it are closed; the rest get its last events."""
        self.ended = True
        for earlier in self._filters[self._closed : i]:
            earlier.close(False)  # they did not see the whole answer the caller gets
        self._closed = i
        return i + 1

    async def finish(self) -> list[bytes]:
        return await self._drain(self._closed, [])

    async def _drain(self, start: int, events: list[bytes]) -> list[bytes]:
        """Events through filters[start:], each filter's tail through the ones after it."""
        filters = self._filters
        for i in range(start, len(filters)):
            if events:
                events = await filters[i].feed(events)
            events = events + await filters[i].finish()
        return events

    def close(self, complete: bool) -> None:
        for f in self._filters[self._closed :]:
            f.close(complete)
        self._closed = len(self._filters)
