"""Search results as the stage handles them: one shape for every engine, merged and numbered once.

Engines answer in their own shapes; each engine module turns its answer into `SearchResult`s. The stage asks
every engine for every query, then `merge` interleaves the lists by rank (each engine's first result, then each
one's second, ...), so no engine crowds out the others, and keeps the first result per URL. The numbers the
model cites are positions in the merged list, which is why the citations filter receives that same list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

SNIPPET_LIMIT = 1000  # characters of a result's text given to the model
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str
    engine: str  # the engine's name, for the access log


def clean(text: object, limit: int = SNIPPET_LIMIT) -> str:
    """One line of text: whitespace collapsed (Atom summaries and HTML snippets wrap), cut at `limit`."""
    if not isinstance(text, str):
        return ""
    line = _SPACE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def result(title: object, url: object, snippet: object, engine: str) -> SearchResult | None:
    """A result from an engine's fields, or None when it has no usable URL (nothing to cite)."""
    if not isinstance(url, str) or not url.strip():
        return None
    return SearchResult(clean(title, 300) or url.strip(), url.strip(), clean(snippet), engine)


def url_key(url: str) -> str:
    """What makes two URLs the same page: scheme and host case-insensitive, no fragment, no trailing slash."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def merge(lists: Iterable[Sequence[SearchResult]], count: int) -> list[SearchResult]:
    """At most `count` results, interleaved by rank across the lists, the first of each URL kept."""
    pending = [list(items) for items in lists if items]
    merged: list[SearchResult] = []
    seen: set[str] = set()
    rank = 0
    while len(merged) < count and any(rank < len(items) for items in pending):
        for items in pending:
            if rank < len(items) and len(merged) < count:
                key = url_key(items[rank].url)
                if key not in seen:
                    seen.add(key)
                    merged.append(items[rank])
        rank += 1
    return merged


def numbered(results: Sequence[SearchResult]) -> str:
    """The results as the model reads them: `[n] title`, the URL, the snippet; a blank line between."""
    blocks = []
    for n, item in enumerate(results, 1):
        lines = [f"[{n}] {item.title}", item.url]
        if item.snippet:
            lines.append(item.snippet)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
