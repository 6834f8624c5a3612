"""Citations for a grounded answer, in OpenAI's own shape, as a response filter.

`annotations`: for every `[n]` marker the model wrote (n a result's number), `message.annotations` gets
`{"type": "url_citation", "url_citation": {"url", "title", "start_index", "end_index"}}`, the indices being the
marker's character offsets into `content`. Offsets count code points, as Python's `str` does and as OpenAI's
Python and JSON clients read them; a JavaScript client indexing UTF-16 code units sees shifted offsets after
characters outside the Basic Multilingual Plane (emoji), which is how OpenAI's own offsets behave there too.
`references`: a sources block (`Sources:` and `[n] title: url` lines, the cited results, or all of them when
none was cited) is appended to the text. `both` does both; the annotations never point into the block.

Streams: the text is tracked per choice as it passes (every event goes out at once, nothing is held), so a
marker split across chunks is still found. Only the chunk with the finish reason is held for a moment: before
it go the references block (a content delta) and one chunk whose `delta.annotations` lists the citations,
which is where OpenAI puts them. A finish chunk that also carries text is split so its text goes out first.
Answers in another dialect (a native pass-through) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

from ... import metrics
from ...answer import OPENAI, Answer
from ...sse import event_data
from ..base import PassFilter
from .results import SearchResult

_MARKER = re.compile(r"\[(\d{1,3})\]")
REFERENCES_HEADING = "Sources:"


def cited_numbers(content: str, count: int) -> list[int]:
    """Result numbers the text cites, in order of first citation."""
    numbers = (int(m.group(1)) for m in _MARKER.finditer(content))
    return list(dict.fromkeys(n for n in numbers if 1 <= n <= count))


def url_citations(content: str, results: Sequence[SearchResult]) -> list[dict[str, Any]]:
    out = []
    for match in _MARKER.finditer(content):
        number = int(match.group(1))
        if 1 <= number <= len(results):
            item = results[number - 1]
            citation = {"url": item.url, "title": item.title, "start_index": match.start(), "end_index": match.end()}
            out.append({"type": "url_citation", "url_citation": citation})
    return out


def references(content: str, results: Sequence[SearchResult]) -> str:
    numbers = sorted(cited_numbers(content, len(results))) or list(range(1, len(results) + 1))
    lines = [f"[{n}] {results[n - 1].title}: {results[n - 1].url}" for n in numbers]
    return "\n\n" + REFERENCES_HEADING + "\n" + "\n".join(lines)


class CitationsFilter(PassFilter):
    __slots__ = ("_annotate", "_openai", "_reference", "_results", "_route", "_texts")

    def __init__(self, results: Sequence[SearchResult], mode: str, route: str):
        self._results = tuple(results)
        self._annotate = mode in ("annotations", "both")
        self._reference = mode in ("references", "both")
        self._route = route
        self._openai = True
        self._texts: dict[int, list[str]] = {}  # choice index -> content pieces so far

    def start(self, answer: Answer) -> None:
        self._openai = answer.dialect == OPENAI

    async def body(self, body: bytes) -> bytes:
        if not self._openai:
            return body
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            return body
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                continue
            assert isinstance(message, dict)
            if self._annotate:
                found = url_citations(content, self._results)
                if found:
                    message["annotations"] = [*(message.get("annotations") or []), *found]
                    metrics.SEARCH_CITATIONS.labels(self._route).inc(len(found))
            if self._reference:
                message["content"] = content + references(content, self._results)
        return orjson.dumps(data)

    def feed_now(self, events: list[bytes]) -> list[bytes]:
        if not self._openai:
            return events
        out: list[bytes] = []
        for event in events:
            payload = event_data(event)
            if not payload.startswith(b"{"):
                out.append(event)
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                out.append(event)
                continue
            choices = data.get("choices") if isinstance(data, dict) else None
            if not isinstance(choices, list) or not choices:
                out.append(event)
                continue
            finishing = []
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else None
                if isinstance(text, str) and text:
                    self._texts.setdefault(int(choice.get("index") or 0), []).append(text)
                if choice.get("finish_reason"):
                    finishing.append(choice)
            if finishing:
                out.extend(self._before_finish(event, data, finishing))
            else:
                out.append(event)
        return out

    def _before_finish(self, event: bytes, data: dict[str, Any], finishing: list[dict[str, Any]]) -> list[bytes]:
        """The finish event, preceded by what the citations add (and by its own text, when it carries any)."""
        extras: list[bytes] = []
        for choice in finishing:
            index = int(choice.get("index") or 0)
            content = "".join(self._texts.get(index, ()))
            if self._reference:
                extras.append(_chunk(data, index, {"content": references(content, self._results)}))
            found = url_citations(content, self._results) if self._annotate else []
            if found:
                extras.append(_chunk(data, index, {"annotations": found}))
                metrics.SEARCH_CITATIONS.labels(self._route).inc(len(found))
        if not extras:
            return [event]
        carries_more = len(data["choices"]) > len(finishing) or any(
            isinstance(c.get("delta"), dict) and c["delta"] for c in finishing
        )
        if not carries_more:
            return [*extras, event]
        # Split: everything but the finish reasons first, then the extras, then the bare finish.
        first = {**data, "choices": [{**c, "finish_reason": None} for c in data["choices"]]}
        if first.get("usage") is not None:
            first["usage"] = None  # usage stays on the finish event only, once
        last = {**data, "choices": [{**c, "delta": {}} for c in finishing]}
        return [_event(first), *extras, _event(last)]


def _chunk(data: dict[str, Any], index: int, delta: dict[str, Any]) -> bytes:
    """A chunk like `data` (id, created, model, ...) with one choice carrying `delta` and no finish reason."""
    chunk = {k: v for k, v in data.items() if k not in ("choices", "usage")}
    chunk["choices"] = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]
    if "usage" in data:
        chunk["usage"] = None  # as every chunk of a stream that asked for usage has it
    return _event(chunk)


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
