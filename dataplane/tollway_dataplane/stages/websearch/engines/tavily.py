"""Tavily: `POST {url}/search` with `Authorization: Bearer tvly-...` and a JSON body.

Only what grounding needs is asked for (`search_depth: basic`, no generated answer, no raw page content): the
model writes the answer, and a basic search is one credit.
"""

from __future__ import annotations

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, result
from .base import Query, items, request_json, require

DEFAULT_URL = "https://api.tavily.com"


class TavilyEngine:
    def __init__(self, config: SearchEngine, timeout: float, key: str | None):
        self.name = config.name
        self.timeout = timeout
        self._url = f"{config.url or DEFAULT_URL}/search"
        self._key = key

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        headers = {"Authorization": f"Bearer {require(self._key, 'the Tavily API key')}"}
        body = {"query": query.text, "max_results": min(query.count, 20), "search_depth": "basic", "topic": "general"}
        data = await request_json(session, "POST", self._url, headers=headers, json=body)
        found = (result(i.get("title"), i.get("url"), i.get("content"), self.name) for i in items(data.get("results")))
        return [r for r in found if r is not None][: query.count]
