"""The control API tests use to script the mock and read back what it received (never logged itself)."""

from __future__ import annotations

import orjson
from aiohttp import web

from .requestlog import RequestLog
from .script import ScriptBook, ScriptError


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_script"}}, 400)


class ControlApi:
    def __init__(self, log: RequestLog, book: ScriptBook) -> None:
        self._log = log
        self._book = book

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.post("/__mock/script", self.add_rule),
            web.get("/__mock/script", self.list_rules),
            web.delete("/__mock/script", self.clear_rules),
            web.get("/__mock/requests", self.list_requests),
            web.delete("/__mock/requests", self.clear_requests),
        ]

    async def healthz(self, _request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def add_rule(self, request: web.Request) -> web.Response:
        try:
            raw = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad_request("rule body is not valid JSON")
        try:
            rule = self._book.add(raw)
        except ScriptError as exc:
            return _bad_request(str(exc))
        return _json(rule.to_json(), 201)

    async def list_rules(self, _request: web.Request) -> web.Response:
        return _json(self._book.snapshot())

    async def clear_rules(self, _request: web.Request) -> web.Response:
        return _json({"cleared": self._book.clear()})

    async def list_requests(self, _request: web.Request) -> web.Response:
        return _json(self._log.snapshot())

    async def clear_requests(self, _request: web.Request) -> web.Response:
        return _json({"cleared": self._log.clear()})
