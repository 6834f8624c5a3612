"""Single flight: identical misses that arrive while one is in flight wait for it instead of calling the provider.

The first request (the leader) goes upstream; its cache filter publishes what it sees into a `Flight`, and each
identical request that arrives meanwhile is answered from it: a live stream fans out event by event as the
leader receives it, a whole answer once it is there. A leader that fails before its answer starts releases its
waiters, who then go upstream themselves; one that fails mid-stream cuts its waiters' streams the same way.
Waiters still pass their own response filters (a guardrail checks each of them). Per process: replicas do not
coordinate their flights.
"""

from __future__ import annotations

import asyncio

from ...answer import OPENAI, StreamInterrupted
from ...sse import event_data
from ...usage import Usage
from .entry import Entry, is_usage_only, usage_chunk


class Flight:
    def __init__(self) -> None:
        self.stream: bool | None = None  # known once the leader's answer starts
        self.dialect = OPENAI
        self.model = ""
        self.events: list[bytes] = []  # a stream's events so far, usage-only chunks left out
        self.body: bytes | None = None
        self.usage: Usage | None = None
        self.done = False
        self.complete = False  # done, and the whole answer arrived
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def begin(self, *, stream: bool, model: str, dialect: str) -> None:
        self.stream, self.model, self.dialect = stream, model, dialect
        self._notify()

    def add(self, events: list[bytes]) -> None:
        kept = [e for e in events if not is_usage_only(e)] if self.dialect == OPENAI else events
        if kept:
            self.events.extend(kept)
            self._notify()

    def end(self, *, complete: bool, body: bytes | None, usage: Usage | None) -> None:
        self.done, self.complete, self.body, self.usage = True, complete, body, usage
        self._notify()

    async def changed(self) -> None:
        await self._changed.wait()

    async def wait_for_answer(self, limit: float) -> bool:
        """Until the leader's answer has started (a first event, or the whole body); False when it failed first
        or did not start in time."""
        try:
            async with asyncio.timeout(limit):
                while not self.done and not (self.stream and self.events):
                    await self.changed()
        except TimeoutError:
            return False
        return self.complete or (not self.done and bool(self.events))

    async def wait_done(self) -> bool:
        while not self.done:
            await self.changed()
        return self.complete

    def entry(self) -> Entry:
        """What a waiter that wants the other kind of answer converts from (only once complete)."""
        usage = self.usage or Usage()
        if self.stream:
            return Entry(0.0, self.dialect, self.model, usage, None, "", events=tuple(self.events))
        return Entry(0.0, self.dialect, self.model, usage, None, "", body=self.body)


class Flights:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def get(self, key: str) -> Flight | None:
        return self._flights.get(key)

    def lead(self, key: str) -> Flight:
        flight = self._flights[key] = Flight()
        return flight

    def land(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


class FlightSource:
    """A waiter's stream: the leader's events as they arrive (an `EventSource`). `[DONE]` is held to the end, so
    a usage chunk, when this waiter asks for one, goes where OpenAI puts it: just before."""

    def __init__(self, flight: Flight, wants_usage: bool):
        self._flight = flight
        self._wants_usage = wants_usage
        self._sent = 0
        self._done_event: bytes | None = None
        self.first = self._take()

    def _take(self) -> list[bytes]:
        events = self._flight.events[self._sent :]
        self._sent = len(self._flight.events)
        if events and event_data(events[-1]) == b"[DONE]":
            self._done_event = events.pop()
        return events

    async def next(self) -> list[bytes] | None:
        flight = self._flight
        while True:
            if self._sent < len(flight.events):
                return self._take()
            if flight.done:
                if not flight.complete:
                    raise StreamInterrupted("closed the connection")
                return None
            await flight.changed()

    def tail(self) -> list[bytes]:
        out = []
        if self._wants_usage and self._flight.dialect == OPENAI:
            out.append(usage_chunk(self._flight.events, self.usage()))
        if self._done_event is not None:
            out.append(self._done_event)
        return out

    def usage(self) -> Usage:
        return self._flight.usage or Usage()

    def close(self) -> None:
        return None
