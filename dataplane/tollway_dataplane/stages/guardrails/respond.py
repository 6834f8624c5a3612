"""The guardrails' response filter: a whole answer is checked before the caller sees it, a stream through the
window (stream.py).

A whole answer that a checker blocks becomes the same error the request side raises, or with `onBlock:
completion` the answer itself says why (finish_reason content_filter); masks rewrite its texts. The filter reads
answers through the view of their dialect (view.py); an answer in a dialect without a view is never passed
unchecked: under failurePolicy closed it is refused as blocked, under open it passes and every response checker
counts an `unsupported-dialect` error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tollway_contract.model import Guardrails

from ...answer import Answer
from ..base import PassFilter
from .evaluate import evaluate
from .reply import GuardrailBlocked
from .rules import RulesChecker
from .stream import StreamWindow
from .verdict import BLOCK, CheckContext, CheckerRuntime, Ledger, Result, effect_of
from .view import AnswerView, view_for

log = logging.getLogger("tollway.guardrails")


class ResponseGuard(PassFilter):
    __slots__ = ("_checkers", "_config", "_context", "_dialect", "_ledger", "_stream", "_unchecked", "_view")

    def __init__(self, config: Guardrails, checkers: Sequence[CheckerRuntime], context: CheckContext, ledger: Ledger):
        self._config = config
        self._checkers = checkers
        self._context = context
        self._ledger = ledger
        self._view: AnswerView | None = None
        self._dialect = ""
        self._stream: StreamWindow | None = None
        self._unchecked = False  # an unknown dialect let through under failurePolicy open

    def start(self, answer: Answer) -> None:
        self._dialect = answer.dialect
        self._view = view_for(answer.dialect)
        if self._view is not None and answer.stream is not None:
            self._stream = StreamWindow(self._config, self._view, self._checkers, self._context, self._ledger)

    async def body(self, body: bytes) -> bytes:
        view = self._view
        if view is None:
            self._unknown_dialect()
            return body
        texts = view.body_texts(body)
        if not texts or not any(texts):
            return body
        config = self._config
        decision = await evaluate(
            self._checkers,
            [texts] * len(self._checkers),
            self._context,
            time_limit=config.timeout,
            failure_policy=config.failure_policy,
            ledger=self._ledger,
        )
        if decision.blocked is not None:
            message = decision.blocked.message or config.message
            if config.on_block == "completion":
                return view.blocked_body(body, message)
            name, direction, category = self._ledger.blocked_by()
            raise GuardrailBlocked(message, name, direction, category)
        if not decision.rewrites:
            return body
        remote = [t for c, t in decision.rewrites if not isinstance(c, RulesChecker)]
        new = remote[-1] if remote else list(texts)
        for checker in self._checkers:
            if isinstance(checker, RulesChecker) and checker.config.action == "mask":
                new = [checker.mask(t) for t in new]
        return view.rewrite_body(body, new)

    async def feed(self, events: list[bytes]) -> list[bytes]:
        if self._stream is None:
            return self._unviewed(events)
        return await self._stream.feed(events)

    def feed_now(self, events: list[bytes]) -> list[bytes] | None:
        if self._stream is None:
            return self._unviewed(events)
        return self._stream.feed_now(events)

    def _unviewed(self, events: list[bytes]) -> list[bytes]:
        if not self._unchecked:
            self._unknown_dialect()  # raises under failurePolicy closed, before anything was sent
        return events

    async def finish(self) -> list[bytes]:
        return await self._stream.finish() if self._stream is not None else []

    def close(self, complete: bool) -> None:
        if self._stream is not None:
            self._stream.close()
        self._ledger.done("response")

    def _unknown_dialect(self) -> None:
        """No view for this dialect: count it as every response checker failing, then let the policy decide."""
        log.warning(
            "answer dialect has no guardrail view; failurePolicy %s applies",
            self._config.failure_policy,
            extra={"request_id": self._context.request_id, "dialect": self._dialect},
        )
        blocked = False
        for checker in self._checkers:
            result = Result(error="unsupported-dialect")
            effect = effect_of(checker.config, result, self._config.failure_policy)
            self._ledger.record(checker.config, "response", result, effect, 0.0)
            blocked = blocked or effect.action == BLOCK
        if blocked:
            name, direction, category = self._ledger.blocked_by()
            raise GuardrailBlocked(self._config.message, name, direction, category)
        self._unchecked = True
