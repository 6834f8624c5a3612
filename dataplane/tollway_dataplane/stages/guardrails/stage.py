"""The guardrails stage: every request-direction checker runs before anything else (the cache, the upstream),
and a response filter checks the answer on its way back, whole or streamed.

Request side: all checkers at once on the texts in their scope; a block answers at once (an error, or with
`onBlock: completion` a reply the caller's protocol shows as an answer), masks rewrite the call's texts in every
body it carries. The response filter is only made when a checker reads answers, so a route guarding prompts only
adds nothing to the way back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tollway_contract.model import Guardrails

from ...call import EMBEDDINGS, Call
from ..base import Exchange, Step
from . import reply
from .evaluate import evaluate
from .prompt import last_user_text, request_items, with_rewritten
from .respond import ResponseGuard
from .rules import RulesChecker
from .verdict import CheckContext, CheckerRuntime, Ledger


class GuardrailStage:
    name = "guardrails"

    def __init__(self, config: Guardrails, checkers: Sequence[CheckerRuntime]):
        self.config = config
        self.request = tuple(c for c in checkers if c.config.direction in ("request", "both"))
        self.response = tuple(c for c in checkers if c.config.direction in ("response", "both"))
        self._judges_answers = any(c.config.type == "llm-judge" for c in self.response)

    async def on_request(self, call: Call, exchange: Exchange) -> Step:
        ledger = Ledger(exchange.notes, exchange.route, exchange.consumer)
        if self.request:
            checked = await self._check_request(call, exchange, ledger)
            if isinstance(checked, Step):
                return checked
            call = checked
        if not self.response or call.endpoint == EMBEDDINGS:
            return Step(call=call)
        context = CheckContext(
            direction="response",
            request_id=exchange.request_id,
            consumer=exchange.consumer,
            route=exchange.route,
            model=exchange.requested_model,
            prompt=last_user_text(call) if self._judges_answers else "",
        )
        return Step(call=call, filter=ResponseGuard(self.config, self.response, context, ledger))

    async def _check_request(self, call: Call, exchange: Exchange, ledger: Ledger) -> Call | Step:
        items = request_items(call)
        messages: tuple[Any, ...] = tuple(call.body.get("messages") or ())
        context = CheckContext(
            direction="request",
            request_id=exchange.request_id,
            consumer=exchange.consumer,
            route=exchange.route,
            model=exchange.requested_model,
            messages=messages,
        )
        texts_for = [[text for scope, text in items if scope in c.config.scope] for c in self.request]
        config = self.config
        decision = await evaluate(
            self.request,
            texts_for,
            context,
            time_limit=config.timeout,
            failure_policy=config.failure_policy,
            ledger=ledger,
        )
        ledger.done("request")
        if decision.blocked is not None:
            message = decision.blocked.message or config.message
            name, direction, category = ledger.blocked_by()
            if config.on_block == "completion" and call.endpoint != EMBEDDINGS:
                return Step(reply=reply.completion(call, message, exchange.request_id))
            raise reply.GuardrailBlocked(message, name, direction, category)
        if not decision.rewrites:
            return call
        # A remote checker's rewritten texts replace the ones it was sent; rules masks (a function of the text,
        # so they apply wherever the text appears) then run on whatever is left.
        maskers = [c for c in self.request if isinstance(c, RulesChecker) and c.config.action == "mask"]
        replaced: dict[tuple[str, str], str] = {}
        for checker, texts in decision.rewrites:
            if isinstance(checker, RulesChecker):
                continue
            sent = texts_for[self.request.index(checker)]
            scope = checker.config.scope
            for original, new in zip(sent, texts, strict=True):
                for s in scope:
                    replaced[(s, original)] = new

        def rewrite(scope: str, text: str) -> str:
            text = replaced.get((scope, text), text)
            for masker in maskers:
                if scope in masker.config.scope:
                    text = masker.mask(text)
            return text

        return with_rewritten(call, rewrite)
