"""A private Elasticsearch index (enterprise knowledge search): `POST {url}/{index}/_search`.

The query is a `multi_match` over the configured fields (boosts such as `title^2` allowed), built as JSON, never
by pasting the question into JSON text. Only the fields shown are fetched. A document without a URL field is
cited by its own URL in the index (`{url}/{index}/_doc/{id}`), which is stable and names where it lives; set
`urlField` when documents carry a link readers can open. An API key is sent as `Authorization: ApiKey ...`
(the encoded form Elasticsearch hands out).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from tollway_contract.model import SearchEngine

from ..results import SearchResult, result
from .base import Query, items, request_json


def field(source: Any, name: str) -> Any:
    """A field of `_source`, dotted names reaching into objects (`meta.title`)."""
    value = source
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class ElasticsearchEngine:
    def __init__(self, config: SearchEngine, timeout: float, key: str | None):
        self.name = config.name
        self.timeout = timeout
        self._base = config.url or ""
        self._index = config.index or ""
        self._url = f"{self._base}/{quote(self._index, safe=',*')}/_search"
        self._config = config
        self._key = key
        shown = [config.title_field, config.snippet_field] + ([config.url_field] if config.url_field else [])
        self._source = sorted(set(shown))

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]:
        config = self._config
        body = {
            "size": query.count,
            "query": {"multi_match": {"query": query.text, "fields": list(config.match_fields)}},
            "_source": self._source,
        }
        headers = {"Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"ApiKey {self._key}"
        data = await request_json(session, "POST", self._url, headers=headers, json=body)
        hits = items(data.get("hits", {}).get("hits") if isinstance(data.get("hits"), dict) else None)
        found = []
        for hit in hits:
            source = hit.get("_source")
            url = field(source, config.url_field) if config.url_field else None
            if not url and hit.get("_id") is not None:
                index = str(hit.get("_index") or self._index)
                url = f"{self._base}/{quote(index, safe='')}/_doc/{quote(str(hit['_id']), safe='')}"
            item = result(field(source, config.title_field), url, field(source, config.snippet_field), self.name)
            if item is not None:
                found.append(item)
        return found[: query.count]
