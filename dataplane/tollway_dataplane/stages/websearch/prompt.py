"""What the stage reads from a chat request and what it adds to one: the caller's `web_search_options`, the
question, and the system message that carries the results.

`web_search_options` is OpenAI's: `search_context_size` (low, medium, high) sets how many results the model is
given (half of `maxResults`, `maxResults`, twice as many), and `user_location.approximate` is passed to engines
that take a locale. The results go in as one system message rendered from a template with `{date}`,
`{results}` and `{question}`; `{date}` is always UTC, plus local time in the configured `timeZone` (or, when
none is configured, the caller's `user_location.timezone`), so no time zone is hard-coded into the prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tollway_contract.model import SEARCH_TEMPLATE_VARIABLES
from tollway_contract.templates import parse_template

from .engines import Location

QUERY_LIMIT = 400  # characters of a question used as a search query (engines cap queries)
QUESTION_LIMIT = 2000  # characters of the question repeated in the system message

DEFAULT_TEMPLATE = """\
Answer the user's question with the help of the web search results below. When a sentence uses a result, \
cite it right after that sentence with the result's number in square brackets, like [1] or [2][3]. If the \
results do not answer the question, say so, and answer from what you know.

Current date: {date}

Search results:
{results}

Question: {question}"""

CONTEXT_SIZES = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """The caller's `web_search_options`."""

    context_size: str = "medium"
    location: Location | None = None


def read_options(value: Any) -> SearchOptions:
    """The options as far as they can be read; an unknown size is medium, an unusable location none (the
    request is never refused for them: the provider would have been the one to judge them)."""
    data = value if isinstance(value, dict) else {}
    size = data.get("search_context_size")
    location = data.get("user_location")
    approximate = location.get("approximate") if isinstance(location, dict) else None
    place = None
    if isinstance(approximate, dict):
        fields = {
            k: v.strip()
            for k in ("country", "region", "city", "timezone")
            if isinstance(v := approximate.get(k), str) and v.strip()
        }
        place = Location(**fields) if fields else None
    return SearchOptions(size if size in CONTEXT_SIZES else "medium", place)


def result_count(max_results: int, context_size: str) -> int:
    if context_size == "low":
        return max(1, math.ceil(max_results / 2))
    if context_size == "high":
        return max_results * 2
    return max_results


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def last_user_text(messages: list[Any]) -> str | None:
    """The question: the last message's text when the user wrote it. A conversation that ends in a tool result
    or an assistant turn is an agent loop in progress, not a new question, and is not searched."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    text = text_of(messages[-1].get("content")).strip()
    return text or None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def format_date(now: datetime, time_zone: str | None) -> str:
    """`2026-12-01 14:03 UTC`, or with a zone `2026-12-01 22:03 Asia/Shanghai (UTC+08:00); 2026-12-01 14:03 UTC`."""
    utc = now.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M UTC")
    zone = _zone(time_zone) if time_zone else None
    if zone is None:
        return text
    local = utc.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} {time_zone} (UTC{offset[:3]}:{offset[3:]}); {text}"


class Prompt:
    """The system message template, parsed once per snapshot."""

    def __init__(self, template: str | None, time_zone: str | None):
        self._pieces = parse_template(template or DEFAULT_TEMPLATE, SEARCH_TEMPLATE_VARIABLES, headers=False)
        self._time_zone = time_zone

    def render(self, *, results: str, question: str, now: datetime, caller_zone: str | None = None) -> str:
        if len(question) > QUESTION_LIMIT:
            question = question[:QUESTION_LIMIT] + "…"
        values = {"results": results, "question": question, "date": format_date(now, self._time_zone or caller_zone)}
        return "".join(p if isinstance(p, str) else values[p.name] for p in self._pieces)
