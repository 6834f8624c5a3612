"""The log of requests the mock received, so tests can assert on what the gateway actually sent."""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

Outcome = Literal["completed", "ended_early", "client_disconnected", "reset", "error"]

DEFAULT_LOG_LIMIT = 10_000


@dataclass(slots=True)
class RequestRecord:
    id: int
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    api_key: str | None
    body: Any
    received_at: float
    finished_at: float | None = None
    outcome: Outcome | None = None  # None while the request is in flight
    chunks_sent: int = 0  # content chunks of a stream written to the client

    def finish(self, outcome: Outcome) -> None:
        # The first outcome sticks: after a scripted reset, the cancellation that follows is not a disconnect.
        if self.outcome is None:
            self.outcome = outcome
            self.finished_at = time.time()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "api_key": self.api_key,
            "body": self.body,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "chunks_sent": self.chunks_sent,
        }


def lower_headers(request: web.BaseRequest) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


class RequestLog:
    """Requests in arrival order; bounded (oldest dropped) so long benchmark runs do not grow memory."""

    def __init__(self, limit: int | None = DEFAULT_LOG_LIMIT) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=limit)
        self._ids = itertools.count(1)

    def open(self, request: web.BaseRequest, api_key: str | None, body: Any) -> RequestRecord:
        record = RequestRecord(
            id=next(self._ids),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=lower_headers(request),
            api_key=api_key,
            body=body,
            received_at=time.time(),
        )
        self._records.append(record)
        return record

    def clear(self) -> int:
        count = len(self._records)
        self._records.clear()
        return count

    def snapshot(self) -> list[dict[str, Any]]:
        return [record.to_json() for record in self._records]
