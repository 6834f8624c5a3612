"""`tollway run`: the data plane process: gateway port, metrics port, config watcher, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import accesslog, metrics
from .app import Gateway
from .caller.responses_store import DEFAULT_TTL, MemoryResponseStore, RedisResponseStore, ResponseStore
from .errors import GatewayError
from .front_door import FrontDoor
from .messages import Inbound, Response
from .ratelimit.backends import LimitBackend, MemoryBackend, RedisBackend
from .redisconn import RedisClient, RedisOptions, connect
from .sources import ConfigSource, Reloader
from .stages.cache.redis_store import RedisStore
from .stages.cache.store import CacheStore, MemoryStore

log = logging.getLogger("tollway.server")
CLOSE_SECONDS = 10.0  # for releasing everything once requests are done (after the grace period)


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    metrics_port: int | None = 9464
    reload_interval: float = 0.5
    drain_delay: float = 2.0  # readiness false before the listener closes, so load balancers stop sending
    grace_period: float = 60.0  # how long in-flight requests and streams may take to finish
    redis: RedisOptions | None = None  # shared limit state on any Redis topology; without it, in-process
    consumer_label: str = "on"  # on | off | cap:N: cardinality guard for the metrics' consumer label
    log_text: bool = False  # prompts and completions in the access log (redacted and truncated)
    log_text_limit: int = 2000
    max_body_bytes: int | None = None  # request body limit; default: the config's (10 MiB)
    cache_max_bytes: int = 256 * 1024 * 1024  # the in-process response cache's bound (without Redis)
    responses_ttl: float = DEFAULT_TTL  # how long the Responses API's stored responses are kept


async def serve_metrics(request: Inbound) -> Response:
    """The metrics listener: `GET /metrics` in Prometheus' text format; anything else is error JSON."""
    if request.path != "/metrics":
        return GatewayError(404, f"Unknown path {request.path!r}; metrics are at /metrics.", "not_found").response()
    if request.method not in ("GET", "HEAD"):
        return GatewayError(405, "Use GET for /metrics.", "method_not_allowed", headers={"Allow": "GET"}).response()
    return Response(body=generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)


class RunningGateway:
    """A started data plane: the gateway listener, the metrics listener and the config watcher."""

    def __init__(self, source: ConfigSource, options: ServerOptions):
        self.options = options
        metrics.consumer_label.set_mode(options.consumer_label)
        # One Redis client (and its connection pool) for everything kept in Redis: limits, cache, responses.
        redis = connect(options.redis) if options.redis is not None else None
        self._redis = redis
        self.gateway = Gateway(
            _limit_backend(options, redis),
            capture_text=options.log_text,
            capture_limit=options.log_text_limit,
            max_body_bytes=options.max_body_bytes,
            cache_store=_cache_store(options, redis),
            responses=_responses_store(options, redis),
        )
        self.reloader = Reloader(self.gateway, source, options.reload_interval)
        self._door = FrontDoor(self.gateway.dispatch)
        self._metrics_door: FrontDoor | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.port = options.port
        self.metrics_port = options.metrics_port

    async def start(self) -> None:
        await self.reloader.load_once()
        await self.gateway.start()
        self.port = await self._door.start(self.options.host, self.options.port, backlog=1024)
        if self.options.metrics_port is not None:
            self._metrics_door = FrontDoor(serve_metrics)
            self.metrics_port = await self._metrics_door.start(self.options.host, self.options.metrics_port)
        self._watcher = asyncio.create_task(self.reloader.run())

    async def drain_and_stop(self) -> None:
        """Not ready, then no new connections, then wait (up to the grace period) for requests in flight."""
        gateway, options = self.gateway, self.options
        log.info(
            "shutting down: draining", extra={"in_flight": gateway.in_flight, "grace_period": options.grace_period}
        )
        gateway.draining = True
        await asyncio.sleep(options.drain_delay)
        self._door.stop_listening()  # no new connections; in-flight handlers continue
        deadline = time.monotonic() + options.grace_period
        while gateway.in_flight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, polled briefly
            await asyncio.sleep(0.05)
        if gateway.in_flight:
            log.warning("grace period over; closing remaining requests", extra={"in_flight": gateway.in_flight})
        await self.close()

    async def close(self) -> None:
        """Release everything, in order; each step within what is left of `CLOSE_SECONDS`. A step that does not
        finish (a Redis client stuck on a dead peer, a connection that never reports closed) is logged by name
        and left behind, so a stopping pod exits and says why rather than hanging until it is killed."""
        if accesslog.sink is not None and isinstance(accesslog.sink, accesslog.BufferedSink):
            accesslog.sink.flush()
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("config watcher", self._stop_watcher),
            ("gateway listener", self._door.close),
            ("gateway", self.gateway.stop),
        ]
        if self._metrics_door is not None:
            steps.append(("metrics listener", self._metrics_door.close))
        if self._redis is not None:
            steps.append(("redis client", self._redis.aclose))
        deadline = time.monotonic() + CLOSE_SECONDS
        for name, step in steps:
            # A late step still gets a moment: one stuck step must not take the others' turn.
            allowed = max(deadline - time.monotonic(), 0.5)
            try:
                async with asyncio.timeout(allowed):
                    await step()
            except TimeoutError:
                log.error("shutdown step did not finish; going on without it", extra={"step": name, "seconds": allowed})

    async def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher


def _limit_backend(options: ServerOptions, redis: RedisClient | None) -> LimitBackend:
    if options.redis is not None:
        return RedisBackend(options.redis, client=redis)
    return MemoryBackend()


def _responses_store(options: ServerOptions, redis: RedisClient | None) -> ResponseStore:
    """Stored responses live where the limits do: Redis when the gateway has one (any replica continues any
    conversation), this process otherwise."""
    if redis is not None:
        return RedisResponseStore(redis, ttl=options.responses_ttl)
    return MemoryResponseStore(ttl=options.responses_ttl)


def _cache_store(options: ServerOptions, redis: RedisClient | None) -> CacheStore:
    """The response cache in Redis when the gateway has one (replicas share entries), else a bounded LRU here."""
    if redis is not None and options.redis is not None:
        return RedisStore(redis, block_ms=max(50, int(options.redis.timeout * 600)))
    return MemoryStore(options.cache_max_bytes)


def _tune_gc() -> None:
    """Fewer, cheaper collections: everything allocated at start-up (modules, config) is frozen out of the
    collector's view, and young-generation collections run less often. A full collection over a large heap
    pauses the event loop for milliseconds, which every open stream would feel as a late chunk."""
    gc.collect()
    gc.freeze()
    # Young collections scan what they find: at 50,000 objects one took 10 ms with 2,000 streams open, which
    # every stream felt as a late chunk; 10,000 keeps each pause near 2 ms.
    gc.set_threshold(10_000, 20, 100)


async def serve(source: ConfigSource, options: ServerOptions) -> int:
    running = RunningGateway(source, options)
    await running.start()
    _tune_gc()
    log.info(
        "tollway listening",
        extra={
            "url": f"http://{options.host}:{running.port}",
            "metrics_port": running.metrics_port,
            "config_source": source.describe(),
            "limit_state": options.redis.describe() if options.redis is not None else "in-process",
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.drain_and_stop()
    await _stop_leftover_tasks(seconds=2.0)
    log.info("stopped")
    return 0


async def _stop_leftover_tasks(*, seconds: float) -> None:
    """Cancel what still runs (the runner would too, but wait for ever on a task that swallows its cancellation,
    as a client library's blocking call sometimes does); one that will not stop is named and the process exits
    without it."""
    this = asyncio.current_task()
    leftover = [task for task in asyncio.all_tasks() if task is not this]
    for task in leftover:
        task.cancel()
    if not leftover:
        return
    _, pending = await asyncio.wait(leftover, timeout=seconds)
    if pending:
        log.error(
            "tasks did not stop; exiting without them", extra={"tasks": sorted(t.get_name() for t in pending)[:20]}
        )
        logging.shutdown()
        os._exit(0)


def run(source: ConfigSource, options: ServerOptions) -> int:
    try:
        import uvloop

        return uvloop.run(serve(source, options))
    except ImportError:
        return asyncio.run(serve(source, options))
