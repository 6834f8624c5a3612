"""The optional rewrite: one call to a small model, through a pool, that turns the conversation into 1-3 search
queries or says no search is needed (the seed's intent check, which spares searches for chit-chat and code).

The model is asked for one strict JSON object, `{"queries": [...]}`, an empty list meaning no search. Anything
else (a timeout, an error, prose, more than one object) is a failure, and the stage then searches with the last
user turn: a failed rewrite must not cost the caller the grounding it would have had without one. The call is
bounded by the rewrite's own timeout on top of the pool's; its tokens are counted per route.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from tollway_contract.model import SearchRewrite

from ... import metrics
from ...call import CHAT, Call
from ..base import Exchange, ModelCaller
from .prompt import QUERY_LIMIT, format_date, text_of

log = logging.getLogger("tollway.search")

MAX_QUERIES = 3
_TURNS = 6  # the last turns shown to the model
_TURN_LIMIT = 1500  # characters per turn

INSTRUCTIONS = """\
You decide whether answering the last user message of a conversation needs a web search, and if so, what to \
search for. Search when the answer depends on current events, recent or changing facts, prices, releases, \
schedules, or specific facts you may not know. Do not search for greetings, small talk, opinions, maths, code, \
translation or rewriting, or questions about the conversation itself.
The current date is {date}.
Reply with one JSON object and nothing else: {{"queries": ["query one", "query two"]}} with 1 to 3 short \
search-engine queries in the language of the user's message, or {{"queries": []}} when no search is needed."""


@dataclass(frozen=True, slots=True)
class RewriteResult:
    queries: tuple[str, ...] | None  # None: the rewrite failed; empty: no search needed


class Rewriter:
    def __init__(self, config: SearchRewrite, models: ModelCaller | None):
        self._config = config
        self._models = models

    async def queries(self, messages: list[Any], exchange: Exchange, now: datetime) -> RewriteResult:
        config = self._config
        if self._models is None:
            return RewriteResult(None)
        body = {
            "model": config.model,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS.format(date=format_date(now, None))},
                {"role": "user", "content": transcript(messages)},
            ],
            "temperature": 0,
            "max_tokens": 200,
        }
        call = Call(CHAT, body, orjson.dumps(body), config.model, False, False)
        route = exchange.route
        try:
            async with asyncio.timeout(config.timeout):
                answer = await self._models.call(config.pool, call, request_id=exchange.request_id)
        except TimeoutError:
            return self._failed(route, "timed out")
        except Exception as exc:  # an upstream error, every attempt failed: search with the question instead
            return self._failed(route, str(exc)[:200])
        if answer.usage is not None:
            metrics.SEARCH_REWRITE_TOKENS.labels(route, "input").inc(answer.usage.input_tokens)
            metrics.SEARCH_REWRITE_TOKENS.labels(route, "output").inc(answer.usage.output_tokens)
        queries = parse_answer(answer.body or b"")
        if queries is None:
            return self._failed(route, "the answer is not the JSON object asked for")
        metrics.SEARCH_REWRITES.labels(route, "queries" if queries else "none_needed").inc()
        return RewriteResult(queries)

    def _failed(self, route: str, reason: str) -> RewriteResult:
        metrics.SEARCH_REWRITES.labels(route, "failed").inc()
        log.warning("search rewrite failed", extra={"pool": self._config.pool, "reason": reason})
        return RewriteResult(None)


def transcript(messages: list[Any]) -> str:
    """The last turns as `role: text` lines (system prompts and tool output left out: they are not the question)."""
    lines = []
    for message in messages[-_TURNS:]:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            continue
        text = text_of(message.get("content")).strip()
        if text:
            lines.append(f"{message['role']}: {text[:_TURN_LIMIT]}")
    return "\n\n".join(lines)


def parse_answer(body: bytes) -> tuple[str, ...] | None:
    """The queries from a chat completion whose content is `{"queries": [...]}` (a Markdown code fence around it
    is tolerated); None when it is anything else."""
    try:
        data = orjson.loads(body)
        content = data["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(content, str):
        return None
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    queries = value.get("queries") if isinstance(value, dict) else None
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        return None
    unique = dict.fromkeys(q.strip()[:QUERY_LIMIT] for q in queries if q.strip())
    return tuple(unique)[:MAX_QUERIES]
