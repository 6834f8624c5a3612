"""The operator's readiness endpoint (`--readiness URL`, the chart's readiness probe).

Ready means the operator has done its first job: every object that existed at start-up was listed, compiled and
the result published (the rendered ConfigMap and Secret written or found current). Until then a restarted
operator answers 503, so a rollout waits for a replica that really took over. With peering, a replica that
stands by for a higher-priority peer is ready too: waiting is its job, and it renders once it takes over.

kopf's own liveness endpoint stays where it is (`--liveness`); it says the process is alive, not that it has
published anything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson
from aiohttp import web

log = logging.getLogger("tollway.operator")

# (ready, reason) for the current moment.
Check = Callable[[], Awaitable[tuple[bool, str]]]


class ReadinessServer:
    def __init__(self, url: str, check: Check):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.port:
            raise ValueError(f"--readiness takes http://HOST:PORT/PATH, got {url!r}")
        self.host = parts.hostname or "0.0.0.0"
        self.port = parts.port
        self.path = parts.path or "/readyz"
        self._check = check
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.path, self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, _request: web.Request) -> web.Response:
        try:
            ready, reason = await self._check()
        except Exception as exc:  # the API server may be unreachable: not ready, and say why
            ready, reason = False, f"cannot tell: {exc}"
        body = orjson.dumps({"ready": ready, "reason": reason})
        return web.Response(body=body, status=200 if ready else 503, content_type="application/json")
