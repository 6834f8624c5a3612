"""Server-sent events framing for relays: split a byte stream into whole events without decoding JSON."""

from __future__ import annotations


class EventSplitter:
    """Feed it upstream bytes as they arrive; it returns complete events (each ending in a blank line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        if not self._buffer and data.endswith(b"\n\n") and data.find(b"\r") < 0:
            # The common case: one whole event per read. A one-line event is told by a one-byte find (memchr);
            # only an event of several lines (`event:` then `data:`) pays for the two-byte search.
            last = len(data) - 2
            if data.find(b"\n") == last or data.find(b"\n\n") == last:
                return [data]
        buffer = self._buffer + data if self._buffer else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            events.append(buffer[start : end + 2])
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        """Whatever arrived after the last complete event (a stream cut mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes:
    """The payload of an event's data line(s)."""
    if event.startswith(b"data:") and event.find(b"\n") == len(event) - 2:
        return event[5:-2].lstrip(b" ")  # the common event: one data line, then the blank line
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines)
