"""Mock search engines for the web-search tests: SearXNG, Tavily, Google, Alibaba Cloud IQS, arXiv and
Elasticsearch, each a real aiohttp server on its own loopback port that answers in the engine's own format.

Every engine records the requests it receives (method, path, query, headers, JSON body) so a test can check
what the gateway sent (auth header, query, parameters), serves the results a test gives it, and can be told to
fail with a status or to answer late.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

import orjson
from aiohttp import web
from conftest import start_app

Hit = tuple[str, str, str]  # title, url, snippet


@dataclass
class MockEngine:
    kind: str
    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)

    def serve(self, *hits: Hit) -> None:
        self.hits = list(hits)

    @property
    def queries(self) -> list[str]:
        """The query text of every request received, whatever the engine calls the parameter."""
        out = []
        for r in self.received:
            q = r["query"]
            body = r["body"] if isinstance(r["body"], dict) else {}
            if self.kind == "elasticsearch":
                out.append(body["query"]["multi_match"]["query"])
            elif self.kind == "tavily":
                out.append(body["query"])
            else:
                out.append(q.get("q") or q.get("query") or q.get("search_query", ""))
        return out


def _searxng(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    results = [{"title": t, "url": u, "content": s, "engine": "mock", "score": 1.0} for t, u, s in engine.hits]
    return web.json_response({"query": request.query.get("q"), "results": results, "answers": [], "infoboxes": []})


def _tavily(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    results = [{"title": t, "url": u, "content": s, "score": 0.9} for t, u, s in engine.hits]
    limit = body.get("max_results", 5) if isinstance(body, dict) else 5
    return web.json_response({"query": body.get("query"), "results": results[:limit], "response_time": 0.01})


def _google(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    items = [{"kind": "customsearch#result", "title": t, "link": u, "snippet": s} for t, u, s in engine.hits]
    payload: dict[str, Any] = {"kind": "customsearch#search", "searchInformation": {"totalResults": str(len(items))}}
    if items:  # Google leaves the key out when nothing matched
        payload["items"] = items[: int(request.query.get("num", "10"))]
    return web.json_response(payload)


def _quark(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    items = [{"title": t, "link": u, "snippet": s, "hostname": "example", "publishTime": 0} for t, u, s in engine.hits]
    return web.json_response({"requestId": "mock", "pageItems": items})


def _arxiv(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    entries = "".join(
        f"""<entry><id>{escape(u)}</id><published>2026-11-30T00:00:00Z</published><title>{escape(t)}</title>
        <summary>  {escape(s)}
        </summary><author><name>A. Author</name></author><author><name>B. Author</name></author>
        <link href="{escape(u)}" rel="alternate" type="text/html"/>
        <link title="pdf" href="{escape(u)}.pdf" rel="related" type="application/pdf"/></entry>"""
        for t, u, s in engine.hits[: int(request.query.get("max_results", "10"))]
    )
    feed = f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>q</title>{entries}</feed>'
    return web.Response(body=feed.encode(), content_type="application/atom+xml")


def _elasticsearch(engine: MockEngine, request: web.Request, body: Any) -> web.Response:
    hits = [
        {
            "_index": request.match_info["index"],
            "_id": f"doc-{i}",
            "_score": 1.0,
            "_source": {"title": t, "body": s, **({"link": u} if u else {})},
        }
        for i, (t, u, s) in enumerate(engine.hits)
    ]
    size = body.get("size", 10) if isinstance(body, dict) else 10
    return web.json_response(
        {"took": 1, "timed_out": False, "hits": {"total": {"value": len(hits)}, "hits": hits[:size]}}
    )


_ROUTES: dict[str, tuple[str, str, Callable[[MockEngine, web.Request, Any], web.Response]]] = {
    "searxng": ("GET", "/search", _searxng),
    "tavily": ("POST", "/search", _tavily),
    "google": ("GET", "/customsearch/v1", _google),
    "quark": ("GET", "/search/genericSearch", _quark),
    "arxiv": ("GET", "/api/query", _arxiv),
    "elasticsearch": ("POST", "/{index}/_search", _elasticsearch),
}


def engine_app(engine: MockEngine) -> web.Application:
    method, path, answer = _ROUTES[engine.kind]

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw) if raw else None
        engine.received.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
            }
        )
        if engine.delay:
            await asyncio.sleep(engine.delay)
        if engine.status != 200:
            return web.json_response({"error": "scripted failure"}, status=engine.status)
        return answer(engine, request, body)

    app = web.Application()
    app.router.add_route(method, path, handle)
    return app


@contextlib.asynccontextmanager
async def running_engines() -> AsyncIterator[dict[str, MockEngine]]:
    """One mock server per engine type, each serving two results of its own by default."""
    runners = []
    out: dict[str, MockEngine] = {}
    for kind in _ROUTES:
        engine = MockEngine(kind)
        engine.serve(
            (f"{kind} first", f"https://{kind}.example/first", f"What {kind} found first."),
            (f"{kind} second", f"https://{kind}.example/second", f"What {kind} found second."),
        )
        runner, port = await start_app(engine_app(engine))
        engine.url = f"http://127.0.0.1:{port}"
        runners.append(runner)
        out[kind] = engine
    try:
        yield out
    finally:
        for runner in runners:
            await runner.cleanup()
