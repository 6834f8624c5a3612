"""Quark through Alibaba Cloud IQS generic search: `GET {url}/search/genericSearch?query=...` with `X-API-Key`.

The answer's `pageItems` carry `title`, `link` and `snippet` (a summary; the full `mainText` is not asked for:
snippets keep the prompt small). There is no page-size parameter, so the list is cut here.
"""

from __future__ import annotations

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, result
from .base import Query, items, request_json, require

DEFAULT_URL = "https://cloud-iqs.aliyuncs.com"


class QuarkEngine:
    def __init__(self, config: SearchEngine, timeout: float, key: str | None):
        self.name = config.name
        self.timeout = timeout
        self._url = f"{config.url or DEFAULT_URL}/search/genericSearch"
        self._key = key

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        headers = {"X-API-Key": require(self._key, "the IQS API key"), "Accept": "application/json"}
        params = {"query": query.text, "timeRange": "NoLimit"}
        data = await request_json(session, "GET", self._url, params=params, headers=headers)
        found = (
            result(i.get("title"), i.get("link"), i.get("snippet") or i.get("summary"), self.name)
            for i in items(data.get("pageItems"))
        )
        return [r for r in found if r is not None][: query.count]
