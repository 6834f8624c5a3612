"""`tollway run`: the data plane process: gateway port, metrics port, config watcher, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics
from .app import Gateway
from .sources import ConfigSource, Reloader

log = logging.getLogger("tollway.server")


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int | None = 9464
    reload_interval: float = 0.5
    drain_delay: float = 2.0  # readiness false before the listener closes, so load balancers stop sending
    grace_period: float = 60.0  # how long in-flight requests and streams may take to finish


def metrics_app() -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app


async def serve(source: ConfigSource, options: ServerOptions) -> int:
    gateway = Gateway()
    reloader = Reloader(gateway, source, options.reload_interval)
    await reloader.load_once()
    runner = web.AppRunner(gateway.make_app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, backlog=1024)
    await site.start()
    metrics_runner = None
    if options.metrics_port is not None:
        metrics_runner = web.AppRunner(metrics_app(), access_log=None)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, options.host, options.metrics_port).start()
    log.info(
        "tollway listening",
        extra={
            "url": f"http://{options.host}:{options.port}",
            "metrics_port": options.metrics_port,
            "config_source": source.describe(),
        },
    )
    watcher = asyncio.create_task(reloader.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("shutting down: draining", extra={"in_flight": gateway.in_flight, "grace_period": options.grace_period})
    gateway.draining = True
    await asyncio.sleep(options.drain_delay)
    await site.stop()  # no new connections; in-flight handlers continue
    deadline = time.monotonic() + options.grace_period
    while gateway.in_flight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, polled briefly
        await asyncio.sleep(0.05)
    if gateway.in_flight:
        log.warning("grace period over; closing remaining requests", extra={"in_flight": gateway.in_flight})
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await runner.cleanup()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    log.info("stopped")
    return 0


def run(source: ConfigSource, options: ServerOptions) -> int:
    try:
        import uvloop

        return uvloop.run(serve(source, options))
    except ImportError:
        return asyncio.run(serve(source, options))
