"""Server-sent event streams, paced and broken on request, shared by every streaming protocol."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import orjson
from aiohttp import web

from .exchange import Exchange

# preamble: before any content (e.g. the role delta); content: carries generated text, counted in
# chunks_sent and reset_after_chunks; trailer: after the content (finish reason, usage, [DONE]).
EventKind = Literal["preamble", "content", "trailer"]


@dataclass(frozen=True, slots=True)
class Event:
    data: bytes
    kind: EventKind = "content"
    name: str | None = None  # the SSE `event:` field; OpenAI leaves it out

    @classmethod
    def json(cls, payload: object, kind: EventKind = "content", name: str | None = None) -> Event:
        return cls(orjson.dumps(payload), kind, name)

    def encode(self) -> bytes:
        line = b"data: " + self.data + b"\n\n"
        return line if self.name is None else b"event: " + self.name.encode() + b"\n" + line


async def stream(exchange: Exchange, events: Iterable[Event]) -> web.StreamResponse:
    """Write each event as it is produced; never build the whole stream in memory."""
    behaviour = exchange.behaviour
    response = web.StreamResponse(
        status=behaviour.success_status,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **exchange.response_headers(),
        },
    )
    exchange.response = response
    await response.prepare(exchange.request)
    record = exchange.record
    reset_after = behaviour.reset_after_chunks
    stall_after, end_after = behaviour.stall_after_chunks, behaviour.end_after_chunks
    for event in events:
        if behaviour.chunk_delay_ms:
            await asyncio.sleep(behaviour.chunk_delay_ms / 1000)
        # The reset takes the place of the next event once N content chunks are out, so a stream shorter
        # than N ends normally; N=0 resets before any event (an upstream that dies right after its headers).
        past_preamble = event.kind != "preamble" or reset_after == 0
        if reset_after is not None and past_preamble and record.chunks_sent >= reset_after:
            await exchange.reset()
            return response
        # A stall or a clean early end takes the place of the next event the same way.
        if stall_after is not None and event.kind != "preamble" and record.chunks_sent >= stall_after:
            await asyncio.Event().wait()  # until the client goes away: the outcome is then client_disconnected
        if end_after is not None and event.kind != "preamble" and record.chunks_sent >= end_after:
            break
        await response.write(event.encode())
        if event.kind == "content":
            record.chunks_sent += 1
    await response.write_eof()
    record.finish("completed" if end_after is None else "ended_early")
    return response
