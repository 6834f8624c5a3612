"""What a request is answered with, before it is written to the caller: from the upstream or made by a stage.

The upstream executor returns an `Answer` (never writes into the request's context), a stage may reply with one,
and the relay writes it through the response filters. A streamed answer is an `EventSource`: its first events
are already read (until then the request could still fail over), the rest are pulled batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .usage import Usage

if TYPE_CHECKING:
    from tollway_contract.model import Price


class StreamInterrupted(Exception):
    """The stream broke after its first event (timeout, reset, an incomplete end): the caller gets an error event."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "timed out", "closed the connection"


class EventSource(Protocol):
    first: list[bytes]  # SSE events already read (in the answer's dialect)

    async def next(self) -> list[bytes] | None:
        """The next batch of events (possibly empty), None at the end; raises StreamInterrupted."""
        ...

    def tail(self) -> list[bytes]:
        """Events owed once the stream has ended."""
        ...

    def usage(self) -> Usage:
        """What the stream used: as reported, or (a stream cut short) an estimate."""
        ...

    def close(self) -> None:
        """Release the stream (the upstream connection, the key's in-flight count); safe to call twice."""
        ...


@dataclass(slots=True)
class AttemptRecord:
    pool: str
    model: str
    key_index: int | None
    outcome: str  # "ok" or the failure reason (status code, timeout, connect-error, reset, benched, ...)
    endpoint: str | None = None  # host:port of the model server tried (pools with endpoints)


@dataclass(slots=True)
class Served:
    """Which backend answered."""

    pool: str
    model: str
    key_index: int | None
    price: Price | None
    endpoint: str | None = None  # host:port of the model server that answered (pools with endpoints)


# The shapes an answer can travel in through the response filters. Translated answers are always OpenAI chat;
# a native pass-through (a protocol's request served by a pool that speaks it) keeps the provider's own shape.
OPENAI = "openai"  # chat.completion bodies, chat.completion.chunk events
RESPONSES = "responses"  # Responses API objects and events (a Responses request served by a pool that speaks it)


@dataclass(slots=True)
class Answer:
    body: bytes | None = None  # a whole answer, in `dialect`
    usage: Usage | None = None  # of a whole answer; a stream reports its own at its end
    stream: EventSource | None = None
    model: str = ""  # the model that answered, as the caller is told
    served: Served | None = None  # None when a stage answered
    attempts: list[AttemptRecord] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # added to the caller's answer
    dialect: str = OPENAI  # the shape of `body` and of the stream's events
