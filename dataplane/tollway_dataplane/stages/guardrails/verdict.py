"""What checkers say and what the guardrails make of it: results, the effect of one result under the checker's
action and the failure policy, and the ledger of one request (the access log's `guardrail` field, the metrics).

Every checker type answers with a `Result` (categories found, rewritten texts, an error), so the request side,
the answer side and the stream window all decide the same way: an error counts per `failurePolicy` (never for
an `audit` checker, which never changes traffic), a finding counts per the checker's `action`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tollway_contract.model import Checker

from ... import metrics

PASS, AUDIT, MASK, BLOCK = "pass", "audit", "mask", "block"
_WEIGHT = {PASS: 0, AUDIT: 1, MASK: 2, BLOCK: 3}
ERROR_CATEGORY = "checker-error"  # the category of a block that a failing checker caused under failurePolicy closed


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a checker may know besides the texts."""

    direction: str  # "request" | "response"
    request_id: str
    consumer: str
    route: str
    model: str
    prompt: str = ""  # the caller's last user text: judges see [user, assistant] when they judge an answer
    messages: tuple[Mapping[str, Any], ...] = ()  # the chat messages, for a webhook judging a request


@dataclass(frozen=True, slots=True)
class Result:
    categories: tuple[str, ...] = ()  # what counted (empty: nothing did)
    texts: list[str] | None = None  # the texts rewritten (a mask), one per text checked
    error: str | None = None  # why the checker could not decide: "timeout", "503", "missing-credentials", ...
    message: str | None = None  # what the service suggests the caller reads (Aliyun's advice)
    detail: str | None = None  # for the access log (a webhook's blocked_reason)


class CheckerRuntime(Protocol):
    config: Checker
    name: str
    remote: bool  # calls out (at most one window in flight per stream) rather than scanning in process

    async def check(self, texts: list[str], context: CheckContext) -> Result: ...


@dataclass(frozen=True, slots=True)
class Effect:
    """What one result does to the traffic."""

    action: str  # PASS | AUDIT | MASK | BLOCK
    categories: tuple[str, ...]
    texts: list[str] | None = None  # for MASK by a rewriting checker
    message: str | None = None


_PASSED = Effect(PASS, ())  # what almost every check comes to: made once


def effect_of(checker: Checker, result: Result, failure_policy: str) -> Effect:
    if result.error is not None:
        if checker.action != "audit" and failure_policy == "closed":
            return Effect(BLOCK, (ERROR_CATEGORY,))
        return _PASSED
    if checker.action == "audit":
        return Effect(AUDIT, result.categories) if result.categories else _PASSED
    if result.texts is not None:  # a rewrite (a rules mask, a webhook intervening)
        return Effect(MASK, result.categories or ("intervened",), texts=result.texts)
    if result.categories:  # found something it cannot rewrite: a block, whether its action is block or mask
        return Effect(BLOCK, result.categories, message=result.message)
    return _PASSED


@dataclass(slots=True)
class _Entry:
    checker: str
    direction: str
    action: str = PASS
    categories: dict[str, None] = field(default_factory=dict)  # an ordered set
    latency: float = 0.0
    calls: int = 0
    errors: dict[str, None] = field(default_factory=dict)
    detail: str | None = None


class Ledger:
    """Every verdict of one request, by checker and direction. Written into the exchange's notes as it grows
    (the access log reads them when the request ends); each direction is counted in metrics once, when done."""

    def __init__(self, notes: dict[str, Any], route: str, consumer: str):
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._route = route
        self._consumer = consumer
        self._summary: dict[str, Any] = {"action": PASS, "checks": []}
        self._counted: set[str] = set()
        notes["guardrail"] = self._summary

    def record(self, checker: Checker, direction: str, result: Result, effect: Effect, elapsed: float) -> None:
        entry = self._entries.get((checker.name, direction))
        if entry is None:
            entry = self._entries[(checker.name, direction)] = _Entry(checker.name, direction)
            self._summary["checks"].append(entry)
        entry.calls += 1
        entry.latency += elapsed
        if _WEIGHT[effect.action] > _WEIGHT[entry.action]:
            entry.action = effect.action
        for category in effect.categories:
            entry.categories.setdefault(category)
        if result.error is not None:
            entry.errors.setdefault(result.error)
            metrics.child(metrics.GUARDRAIL_ERRORS, self._route, checker.name, direction, result.error).inc()
        if result.detail:
            entry.detail = result.detail[:200]
        metrics.child(metrics.GUARDRAIL_CHECK_SECONDS, self._route, checker.name, direction).observe(elapsed)
        if _WEIGHT[effect.action] > _WEIGHT[self._summary["action"]]:
            self._summary["action"] = effect.action
            if effect.action == BLOCK:
                self._summary.update(
                    checker=checker.name, direction=direction, category=next(iter(effect.categories), "")
                )

    def blocked_by(self) -> tuple[str, str, str]:
        """(checker, direction, category) of the block, when there was one."""
        s = self._summary
        return s.get("checker", ""), s.get("direction", ""), s.get("category", "")

    def done(self, direction: str) -> None:
        """Count this direction's verdicts (once) and make the notes plain data for the access log."""
        if direction in self._counted:
            return
        self._counted.add(direction)
        consumer = metrics.consumer_label(self._consumer)
        for entry in self._entries.values():
            if entry.direction != direction:
                continue
            for category in entry.categories or ("",):
                labels = (self._route, consumer, entry.checker, direction, category, entry.action)
                metrics.child(metrics.GUARDRAIL_VERDICTS, *labels).inc()
        self._summary["checks"] = [_plain(e) if isinstance(e, _Entry) else e for e in self._summary["checks"]]


def _plain(entry: _Entry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "checker": entry.checker,
        "direction": entry.direction,
        "action": entry.action,
        "categories": list(entry.categories),
        "latency_ms": round(entry.latency * 1000, 3),
        "calls": entry.calls,
    }
    if entry.errors:
        out["errors"] = list(entry.errors)
    if entry.detail:
        out["detail"] = entry.detail
    return out
