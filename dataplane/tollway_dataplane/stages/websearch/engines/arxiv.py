"""arXiv, through its Atom API: `GET {url}/api/query?search_query=...&max_results=...`.

arXiv matches field-prefixed terms (`all:word`), not questions, so the query's words (stop words and very short
words left out, at most six) are joined with AND. Each entry becomes a result: its title, its abstract page, and
its abstract with authors and date as the snippet.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, clean, result
from .base import EngineError, Query, request_bytes

DEFAULT_URL = "https://export.arxiv.org"
_ATOM = "{http://www.w3.org/2005/Atom}"
_WORD = re.compile(r"[\w.+-]+")
# Words that only make a question a question; words of two letters or fewer are left out too.
_STOP_WORDS = (
    "and are about did does for from how latest new not paper papers recent research that the this was what "
    "when where which who why with"
)
_STOP = frozenset(_STOP_WORDS.split())


def search_query(text: str) -> str:
    words = [w for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOP][:6]
    return " AND ".join(f"all:{w}" for w in words) or f"all:{text.strip()}"


class ArxivEngine:
    def __init__(self, config: SearchEngine, timeout: float):
        self.name = config.name
        self.timeout = timeout
        self._url = f"{config.url or DEFAULT_URL}/api/query"

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        params = {"search_query": search_query(query.text), "start": "0", "max_results": str(query.count)}
        body = await request_bytes(session, "GET", self._url, params=params, headers={"Accept": "application/atom+xml"})
        try:
            feed = ElementTree.fromstring(body)  # the stdlib parser resolves no external entities
        except ElementTree.ParseError:
            raise EngineError("answered with a body that is not Atom XML") from None
        found = []
        for entry in feed.iter(f"{_ATOM}entry"):
            link = next(
                (e.get("href") for e in entry.iter(f"{_ATOM}link") if e.get("rel") == "alternate"),
                entry.findtext(f"{_ATOM}id"),
            )
            authors = ", ".join(clean(a.findtext(f"{_ATOM}name")) for a in entry.iter(f"{_ATOM}author"))
            published = (entry.findtext(f"{_ATOM}published") or "")[:10]
            summary = clean(entry.findtext(f"{_ATOM}summary"))
            snippet = " ".join(part for part in (summary, f"Authors: {authors}." if authors else "", published) if part)
            item = result(entry.findtext(f"{_ATOM}title"), link, snippet, self.name)
            if item is not None:
                found.append(item)
        return found[: query.count]
