"""The control API tests use to script the mock and read back what it received (never logged itself), and the
model server's `/metrics` (the simulated engine's load, or figures a test pinned with `PUT /__mock/load`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from .engine import Engine, LoadReport
from .exposition import FORMATS, render
from .requestlog import RequestLog
from .script import ScriptBook, ScriptError

METRICS_MODEL = "mock-gpt"


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _bad_request(message: str) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error", "code": "invalid_script"}}, 400)


class ControlApi:
    def __init__(self, log: RequestLog, book: ScriptBook, engine: Engine, load: LoadReport) -> None:
        self._log = log
        self._book = book
        self._engine = engine
        self._load = load
        self._default_format = load.format

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.post("/__mock/script", self.add_rule),
            web.get("/__mock/script", self.list_rules),
            web.delete("/__mock/script", self.clear_rules),
            web.get("/__mock/requests", self.list_requests),
            web.delete("/__mock/requests", self.clear_requests),
            web.get("/metrics", self.metrics),
            web.get("/__mock/load", self.get_load),
            web.put("/__mock/load", self.put_load),
            web.delete("/__mock/load", self.clear_load),
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

    async def metrics(self, _request: web.Request) -> web.Response:
        load = self._load
        if load.status != 200:
            return web.Response(status=load.status, text="scripted metrics failure\n")
        text = render(load.format, METRICS_MODEL, load.figures(self._engine))
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def get_load(self, _request: web.Request) -> web.Response:
        engine = self._engine
        totals = {"prompt_tokens": engine.prompt_tokens, "cached_prompt_tokens": engine.cache_hits}
        return _json({"pinned": asdict(self._load), "engine": asdict(engine.report()), "totals": totals})

    async def put_load(self, request: web.Request) -> web.Response:
        """Pin what /metrics reports: any of waiting, running, kv_cache_usage (absent: the engine's own figure),
        format (vllm | sglang) and status (a /metrics answer other than 200)."""
        try:
            raw = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad_request("load body is not valid JSON")
        try:
            self._load = self._load_from(raw)
        except ValueError as exc:
            return _bad_request(str(exc))
        return await self.get_load(request)

    async def clear_load(self, request: web.Request) -> web.Response:
        self._load = LoadReport(format=self._default_format)
        return await self.get_load(request)

    def _load_from(self, raw: Any) -> LoadReport:
        if not isinstance(raw, dict):
            raise ValueError("load must be a JSON object")
        unknown = set(raw) - {"format", "waiting", "running", "kv_cache_usage", "status"}
        if unknown:
            raise ValueError(f"unknown load field(s): {', '.join(sorted(unknown))}")
        figures: dict[str, float | None] = {}
        for name in ("waiting", "running", "kv_cache_usage"):
            value = raw.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"{name} must be a non-negative number")
            figures[name] = None if value is None else float(value)
        fmt = raw.get("format", self._default_format)
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        status = raw.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("status must be an HTTP status")
        return LoadReport(format=fmt, status=status, **figures)
