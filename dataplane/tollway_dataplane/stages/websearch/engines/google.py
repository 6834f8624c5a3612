"""Google Programmable Search (Custom Search JSON API): `GET {url}/customsearch/v1?cx=...&q=...&num=...`.

The API key goes in the `X-Goog-Api-Key` header rather than the documented `key` query parameter, so it never
sits in a URL that a proxy or a log might keep. `num` is at most 10 per request. The caller's country (from
`web_search_options.user_location`) becomes `gl`, which boosts results from that country.
"""

from __future__ import annotations

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, result
from .base import Query, items, request_json, require

DEFAULT_URL = "https://www.googleapis.com"


class GoogleEngine:
    def __init__(self, config: SearchEngine, timeout: float, key: str | None, cx: str | None):
        self.name = config.name
        self.timeout = timeout
        self._url = f"{config.url or DEFAULT_URL}/customsearch/v1"
        self._key = key
        self._cx = cx

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        headers = {"X-Goog-Api-Key": require(self._key, "the Google API key"), "Accept": "application/json"}
        params = {
            "cx": require(self._cx, "the search engine id (cx)"),
            "q": query.text,
            "num": str(min(query.count, 10)),
        }
        country = query.location.country if query.location is not None else None
        if country:
            params["gl"] = country.lower()
        data = await request_json(session, "GET", self._url, params=params, headers=headers)
        found = (result(i.get("title"), i.get("link"), i.get("snippet"), self.name) for i in items(data.get("items")))
        return [r for r in found if r is not None][: query.count]
