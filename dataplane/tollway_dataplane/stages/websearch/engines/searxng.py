"""SearXNG, self-hosted: `GET {url}/search?q=...&format=json`.

The instance must allow the json format (`search.formats` in its settings; it answers 403 otherwise) and should
exempt the gateway from its bot limiter. It has no page-size parameter (about 20 results a page), so the list
is cut here; `language` is left to the instance's default.
"""

from __future__ import annotations

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, result
from .base import Query, items, request_json


class SearxngEngine:
    def __init__(self, config: SearchEngine, timeout: float):
        self.name = config.name
        self.timeout = timeout
        self._url = f"{config.url}/search"

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        params = {"q": query.text, "format": "json", "pageno": "1"}
        data = await request_json(session, "GET", self._url, params=params, headers={"Accept": "application/json"})
        found = (result(i.get("title"), i.get("url"), i.get("content"), self.name) for i in items(data.get("results")))
        return [r for r in found if r is not None][: query.count]
