"""Web-search grounding as a stage: decide whether to search, search, put the results in front of the model, and
hand the answer's citations to a response filter.

When: `always` searches every chat request that ends in a user turn; `auto` (the default) searches when the
caller sends OpenAI's `web_search_options`, or when the optional rewrite model says the question needs fresh
facts (without a rewrite, `auto` only answers the option). The caller's option is honoured whatever the rewrite
says; the rewrite's "no search needed" only saves searches nobody asked for.

`web_search_options` is removed from the chat body before any provider sees it: this stage does the search, so
a provider's own search would be a second, unasked one (and most providers refuse the field). Routes without
this stage send it to `openai` pools only (the translator drops it for every other provider).

The results go in as one system message before the conversation (every chat template accepts a leading system
message; some refuse one later on), from the template with `{date}`, `{results}` and `{question}`. When every
engine fails, `failurePolicy: open` answers without search and `closed` refuses with 503. The access log's
`search` field says what happened: the trigger, the queries, each engine's status, result count and time
(never the results' text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from tollway_contract.model import Rule, WebSearch

from ... import metrics
from ...call import CHAT, Call
from ...errors import GatewayError
from ..base import CONTINUE, Exchange, StageServices, Step
from . import engines as engine_modules
from .citations import CitationsFilter
from .engines import Engine
from .prompt import QUERY_LIMIT, Prompt, last_user_text, read_options, result_count
from .results import numbered
from .rewrite import Rewriter
from .search import search_all


class WebSearchStage:
    name = "webSearch"

    def __init__(
        self,
        config: WebSearch,
        engines: Sequence[Engine],
        http: Callable[[], aiohttp.ClientSession] | None,
        rewriter: Rewriter | None,
    ):
        self.config = config
        self._engines = tuple(engines)
        self._http = http
        self._rewriter = rewriter
        self._prompt = Prompt(config.template, config.time_zone)

    async def on_request(self, call: Call, exchange: Exchange) -> Step:
        if call.endpoint != CHAT:
            return CONTINUE
        config = self.config
        body = call.body
        asked = body.get("web_search_options") is not None
        if "web_search_options" in body:
            call = call.with_body({k: v for k, v in body.items() if k != "web_search_options"})
        options = read_options(body.get("web_search_options"))
        always = config.enabled == "always"
        trigger = "web_search_options" if asked else "always" if always else "rewrite" if self._rewriter else None
        note: dict[str, Any] = {"trigger": trigger}
        exchange.notes["search"] = note
        question = last_user_text(body["messages"])
        wanted = asked or always
        if question is None or (not wanted and self._rewriter is None):
            return self._skip(call, exchange, note, "not_a_question" if question is None else "not_asked")
        now = datetime.now(UTC)
        queries: tuple[str, ...] = (question[:QUERY_LIMIT],)
        if self._rewriter is not None:
            rewrite = await self._rewriter.queries(body["messages"], exchange, now)
            note["rewrite"] = "failed" if rewrite.queries is None else "queries" if rewrite.queries else "none_needed"
            if rewrite.queries:
                queries = rewrite.queries
            elif rewrite.queries is not None and not wanted:
                return self._skip(call, exchange, note, "not_needed")
        note["queries"] = list(queries)
        count = result_count(config.max_results, options.context_size)
        session = self._http() if self._http is not None else None
        outcome = await search_all(self._engines, session, queries, count, options.location, exchange.route)
        note["engines"] = outcome.report()
        note["results"] = len(outcome.results)
        if not outcome.any_ok:
            if config.failure_policy == "closed":
                self._decide(exchange, note, "failed_closed")
                raise GatewayError(
                    503, "Web search is unavailable right now; retry later.", "search_unavailable", type="server_error"
                )
            return self._skip(call, exchange, note, "failed_open")
        if not outcome.results:
            return self._skip(call, exchange, note, "no_results")
        zone = options.location.timezone if options.location is not None else None
        message = self._prompt.render(results=numbered(outcome.results), question=question, now=now, caller_zone=zone)
        self._decide(exchange, note, "searched")
        grounded = call.with_messages([{"role": "system", "content": message}], [])
        return Step(call=grounded, filter=CitationsFilter(outcome.results, config.citations, exchange.route))

    def _skip(self, call: Call, exchange: Exchange, note: dict[str, Any], decision: str) -> Step:
        self._decide(exchange, note, decision)
        return Step(call=call)

    @staticmethod
    def _decide(exchange: Exchange, note: dict[str, Any], decision: str) -> None:
        note["decision"] = decision
        metrics.SEARCH_DECISIONS.labels(exchange.route, decision).inc()


def build(rule: Rule, services: StageServices) -> WebSearchStage | None:
    config = rule.web_search
    if config is None or config.enabled == "off":
        return None
    engines = [engine_modules.build(e, config.timeout, services.secrets) for e in config.engines]
    rewriter = Rewriter(config.rewrite, services.models) if config.rewrite is not None else None
    return WebSearchStage(config, engines, services.http, rewriter)
