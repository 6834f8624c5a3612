"""Everything one request learns on its way through the gateway: read by the access log, metrics and limits."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .answer import AttemptRecord
from .usage import Usage

if TYPE_CHECKING:
    from tollway_contract.model import Price

    from .caller.base import ErrorShape
    from .ratelimit.limiter import Reservation


@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    endpoint: str = ""
    route: str = ""
    consumer: str = ""
    requested_model: str = ""
    served_model: str = ""
    pool: str = ""
    key_index: int | None = None
    served_endpoint: str | None = None  # host:port of the model server that answered (pools with endpoints)
    stream: bool = False
    status: int = 0
    error: str = ""
    attempts: list[AttemptRecord] = field(default_factory=list)
    usage: Usage | None = None
    ttft: float | None = None  # seconds to the first streamed event
    finished: float | None = None
    protocol: ErrorShape | None = None  # set when the caller speaks a protocol other than OpenAI: its errors
    reservation: Reservation | None = None  # rate-limit reservation to settle once usage is known
    response_headers: dict[str, str] = field(default_factory=dict)  # added to every answer (rate-limit state)
    price: Price | None = None  # the serving pool's price for the served model
    cost: float | None = None  # USD, once usage is known
    billed: bool = True  # False when no provider made the answer (a stage replied): limits charge no tokens
    capture: bool = False  # keep prompt and completion text for the access log
    prompt: str | None = None
    completion: str | None = None
    notes: dict[str, Any] | None = None  # what the stages report for the access log, by field (stage routes only)

    @property
    def duration(self) -> float:
        return (self.finished or time.perf_counter()) - self.started
