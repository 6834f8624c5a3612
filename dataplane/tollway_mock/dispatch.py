"""The path every protocol request takes: route, log, authenticate, script, then the protocol handler."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from . import content
from .engine import Engine
from .exchange import ApiError, Dialect, Exchange, Route, api_key_of
from .requestlog import RequestLog
from .script import MOCK_HEADER, Behaviour, ScriptBook, ScriptError, resolve

CONTROL_PREFIX = "/__mock/"
_UNPARSED = object()  # a body that is present but not JSON


class Dispatcher:
    def __init__(
        self,
        routes: Sequence[Route],
        fallback: Dialect,
        log: RequestLog,
        book: ScriptBook,
        require_keys: frozenset[str] | None,
        engine: Engine | None = None,
    ) -> None:
        self._routes = routes
        self._fallback = fallback
        self._log = log
        self._book = book
        self._require_keys = require_keys
        self._engine = engine

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            raise web.HTTPNotFound()  # a mistyped control call is not traffic to record
        route = self._route_for(request)
        body = _parse(await request.read())
        record = self._log.open(request, api_key_of(request), None if body is _UNPARSED else body)
        exchange = Exchange(request, record, route.dialect if route else self._fallback, body)
        try:
            return await self._serve(exchange, route)
        except asyncio.CancelledError:
            # The server cancels the handler when the client goes away (handler_cancellation).
            record.finish("client_disconnected")
            raise
        except ConnectionResetError:
            # A write to a client that already left; aiohttp finishes the response quietly.
            record.finish("client_disconnected")
            return exchange.response or web.Response()
        except Exception:
            record.finish("error")
            raise

    async def _serve(self, exchange: Exchange, route: Route | None) -> web.StreamResponse:
        request, record = exchange.request, exchange.record
        try:
            if route is None:
                raise ApiError(404, f"Invalid URL ({request.method} {request.path})", "unknown_url")
            if self._require_keys and record.api_key not in self._require_keys:
                message = "Incorrect API key provided." if record.api_key else "You didn't provide an API key."
                raise ApiError(401, message, "invalid_api_key")
            if exchange.body is _UNPARSED:
                raise ApiError(400, "We could not parse the JSON body of your request.", "invalid_json")
            try:
                exchange.behaviour = resolve(
                    exchange.body,
                    request.headers.get(MOCK_HEADER),
                    self._book,
                    model=route.dialect.model_of(request, exchange.body),
                    api_key=record.api_key,
                    path=request.path,
                )
            except ScriptError as exc:
                raise ApiError(400, str(exc), "invalid_mock") from exc
            behaviour = exchange.behaviour
            if behaviour.headers_delay_ms:
                await asyncio.sleep(behaviour.headers_delay_ms / 1000)
            if behaviour.is_error:
                return await exchange.send_scripted_error()
            if route.prompt is not None and self._engine is not None:
                return await self._generate(exchange, route, self._engine)
            return await route.handler(exchange)
        except ApiError as exc:
            return await exchange.send_error(exc)

    async def _generate(self, exchange: Exchange, route: Route, engine: Engine) -> web.StreamResponse:
        """A generation request through the simulated engine: a slot, the prefill, then the answer at the
        engine's decoding pace (a script's own chunk delay wins); cached prompt tokens show in the usage."""
        assert route.prompt is not None
        body = exchange.body if isinstance(exchange.body, dict) else {}
        behaviour = exchange.behaviour
        tokens = _output_tokens(behaviour, body)
        async with engine.serve(route.prompt(body), tokens) as admission:
            changes: dict[str, Any] = {}
            if admission.decode_ms_per_token and not behaviour.chunk_delay_ms:
                changes["chunk_delay_ms"] = admission.decode_ms_per_token
            if admission.cached_tokens:
                changes["usage"] = {**(behaviour.usage or {}), "cached_tokens": admission.cached_tokens}
            if changes:
                exchange.behaviour = dataclasses.replace(behaviour, **changes)
            if body.get("stream") is not True and admission.decode_ms_per_token:
                await asyncio.sleep(tokens * admission.decode_ms_per_token / 1000)
            return await route.handler(exchange)

    def _route_for(self, request: web.Request) -> Route | None:
        for route in self._routes:
            if route.method == request.method and route.pattern.search(request.path):
                return route
        return None


def _output_tokens(behaviour: Behaviour, body: dict[str, Any]) -> int:
    """About how many tokens the answer will have: the script's chunks or the default text, up to max_tokens."""
    count = (
        behaviour.chunks
        if behaviour.chunks is not None
        else len(content.pieces(behaviour.content or content.DEFAULT_TEXT))
    )
    for key in ("max_completion_tokens", "max_tokens"):
        limit = body.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return min(count, limit)
    return count


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNPARSED
