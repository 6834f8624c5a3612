"""Connections to Redis, whatever its topology: one place that turns options into a `redis.asyncio` client.

Limits (and later the response cache and store) share state through Redis. Deployments differ: a single server,
TLS with a private CA and client certificates, ACL users, Sentinel-managed failover, Redis Cluster. redis-py knows
all of them (redirects, failover, pools, health checks); this module only maps the gateway's options onto it, so
every feature gets the same client and no topology is handled by hand.

`Outage` is the other shared piece: what to do when Redis is unreachable. Callers fail fast for a moment instead
of making every request wait on a dead server, and the outage and the recovery are logged once each. It tells
outages (connection, timeout, a server that cannot serve: failover, cluster down, loading) apart from error
replies caused by one request's data: those are that request's problem and never switch the state off for
everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff

try:  # redis-py's hiredis parser, read directly on the held connection (see _read_replies)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser

    _HiredisParser: tuple[type, ...] = (_AsyncHiredisParser,)
except ImportError:  # another layout: the reply-by-reply path
    _NOT_ENOUGH_DATA, _HiredisParser = object(), ()

log = logging.getLogger("tollway.redis")

T = TypeVar("T")
RedisClient = aioredis.Redis | RedisCluster

# Error replies that describe the server's state, not the command: the server cannot serve right now.
_UNAVAILABLE_REPLIES = ("READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "NOREPLICAS", "BUSY")

_OUTAGE_ERRORS = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.ClusterError,
    rexc.RedisClusterException,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Where shared state lives and how to reach it. Secrets (password, key file) never come from argv."""

    url: str = "redis://127.0.0.1:6379/0"  # redis:// or rediss:// (TLS); host and port are a seed in cluster mode
    username: str | None = None  # ACL user; default: the URL's
    password: str | None = None  # default: the URL's
    ca_file: str | None = None  # rediss://: CA bundle that signed the server certificate (default: system CAs)
    client_cert: str | None = None  # rediss:// with client authentication: certificate and key (PEM files)
    client_key: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()  # Sentinel mode: the sentinels, asked for the master's address
    sentinel_master: str | None = None  # Sentinel mode: the monitored master's name
    cluster: bool = False  # Redis Cluster: the URL names any one node
    timeout: float = 0.5  # per command: a decision waits at most this long for Redis
    connect_timeout: float = 0.5
    health_check_interval: float = 15.0  # PING a connection idle this long before reusing it
    max_connections: int = 512  # per server; callers wait for a free one beyond it

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "rediss"

    def describe(self) -> str:
        """For logs: the topology and address, never a password."""
        parsed = urlparse(self.url)
        where = f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}"
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {hosts} master {self.sentinel_master} ({'TLS' if self.tls else 'plain'})"
        return f"cluster seed {where}" if self.cluster else where


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """ "HOST:PORT,HOST:PORT" (port defaults to 26379)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no sentinel address given")
    return tuple(out)


def options_from_url(url: str, **overrides: Any) -> RedisOptions:
    """redis://, rediss://, and redis+sentinel://[user:pass@]H:P,H:P/MASTER[/DB] (rediss+sentinel:// for TLS)."""
    parsed = urlparse(url)
    if parsed.scheme in ("redis+sentinel", "rediss+sentinel"):
        netloc = parsed.netloc.rpartition("@")[2]
        credentials = parsed.netloc.rpartition("@")[0]
        parts = [p for p in parsed.path.split("/") if p]
        if not parts:
            raise ValueError("a redis+sentinel:// URL names the master: redis+sentinel://H:P,H:P/MASTER[/DB]")
        scheme = "rediss" if parsed.scheme.startswith("rediss") else "redis"
        db = parts[1] if len(parts) > 1 else "0"
        auth = f"{credentials}@" if credentials else ""
        base = {"url": f"{scheme}://{auth}sentinel-managed/{db}", "sentinels": parse_sentinels(netloc)}
        return RedisOptions(**(base | {"sentinel_master": parts[0]} | overrides))
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"unsupported Redis URL scheme {parsed.scheme!r} (use redis://, rediss:// or redis+sentinel://)"
        )
    return RedisOptions(**({"url": url} | overrides))


class _Sentinel(Sentinel):
    """Asks for the master the way the sentinels announce a failover: GET-MASTER-ADDR-BY-NAME names the promoted
    replica as soon as it is promoted, while SENTINEL MASTERS (what redis-py reads) keeps the old address until
    the whole failover ends, seconds later, and the old master refuses writes meanwhile."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors = []
        for index, sentinel in enumerate(self.sentinels):
            try:
                address = await sentinel.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", service_name)
            except (rexc.ConnectionError, rexc.TimeoutError) as exc:
                errors.append(f"{exc!r}")
                continue
            if address:
                host, port = address
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]  # ask it first next time
                return (host.decode() if isinstance(host, bytes) else str(host)), int(port)
        raise MasterNotFoundError(f"no sentinel knows master {service_name!r} {'; '.join(errors)}".strip())


def connect(options: RedisOptions) -> RedisClient:
    """A client for the configured topology. Connections open lazily, so this never blocks or fails on a
    server that is down; the first command does."""
    parsed = urlparse(options.url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme {parsed.scheme!r} (use redis:// or rediss://)")
    username = options.username or (unquote(parsed.username) if parsed.username else None)
    password = options.password if options.password is not None else (unquote(parsed.password or "") or None)
    db = int(parsed.path.lstrip("/") or 0)
    common: dict[str, Any] = {
        "username": username,
        "password": password,
        "socket_timeout": options.timeout,
        "socket_connect_timeout": options.connect_timeout,
        "health_check_interval": options.health_check_interval,
        # One quick retry on a fresh connection covers a server that closed an idle one or a failover that
        # moved the master; longer outages are the Outage guard's business, not a per-request wait.
        "retry": Retry(NoBackoff(), 1),
        # RESP2, said outright: redis-py 8 speaks RESP3 unless told, which costs a HELLO per connection, is
        # refused by servers older than 6 and by some proxies, and gives the gateway nothing (no client-side
        # caching, no pub/sub here). The held connection's replies are read straight from hiredis on RESP2 only.
        "protocol": 2,
    }
    if options.tls:
        common |= {"ssl": True, "ssl_ca_certs": options.ca_file, "ssl_certfile": options.client_cert}
        common |= {"ssl_keyfile": options.client_key, "ssl_cert_reqs": "required"}
    if options.sentinels:
        if not options.sentinel_master:
            raise ValueError("Sentinel mode needs the master's name (--redis-sentinel-master)")
        # The sentinels themselves are asked over plain connections with the same timeouts.
        sentinel_kwargs = {"socket_timeout": options.timeout, "socket_connect_timeout": options.connect_timeout}
        sentinel = _Sentinel(list(options.sentinels), sentinel_kwargs=sentinel_kwargs, **common, db=db)
        return sentinel.master_for(options.sentinel_master, max_connections=options.max_connections)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if options.cluster:
        if db:
            raise ValueError("Redis Cluster has only database 0")
        return RedisCluster(host=host, port=port, max_connections=options.max_connections, **common)
    pool = aioredis.BlockingConnectionPool(
        connection_class=aioredis.SSLConnection if options.tls else aioredis.Connection,
        host=host,
        port=port,
        db=db,
        max_connections=options.max_connections,
        timeout=options.timeout,  # waiting for a free connection counts as waiting for Redis
        **{k: v for k, v in common.items() if k != "ssl"},
    )
    return aioredis.Redis.from_pool(pool)


def is_outage(exc: BaseException) -> bool:
    """True when Redis could not serve (down, unreachable, too slow, failing over); False for an error reply
    caused by the command itself (a script error, a wrong type), which says nothing about availability."""
    if isinstance(exc, rexc.ReadOnlyError):
        return True  # a demoted master: redis-py takes the READONLY code off the text
    if isinstance(exc, rexc.ResponseError) and not isinstance(exc, rexc.ClusterDownError):
        return str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES
    return isinstance(exc, _OUTAGE_ERRORS)


class Unavailable(Exception):
    """Redis cannot be reached or cannot serve right now."""


class Outage:
    """Outage tracking for one Redis client: while it is down, one call at a time probes it (at most every
    `retry_interval`) and the others fail at once instead of waiting on a dead server; the change of state is
    logged once each way. So a limit is off no longer than Redis is down, give or take one probe. Reusable by
    every feature that keeps state in Redis."""

    def __init__(
        self,
        what: str,
        retry_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        reconnect: Callable[[], Awaitable[None]] | None = None,
    ):
        self.what = what  # names the feature in logs, e.g. "rate limits"
        self.retry_interval = retry_interval
        self._reconnect = reconnect  # drops pooled connections after a failure, so the next one looks anew
        self._clock = clock
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._probing = False

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def refusing(self) -> bool:
        """Whether a call now would be answered Unavailable without trying (down, and not yet time to probe)."""
        return self.down_since is not None and (self._probing or self._clock() < self._retry_at)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`; raise Unavailable when Redis is down. Errors that are not outages pass through."""
        now = self._clock()
        probe = False
        if self.down_since is not None:
            if self._probing or now < self._retry_at:
                raise Unavailable("redis is unavailable")
            probe = self._probing = True
        try:
            result = await operation()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._failed(self._clock(), exc)
            if self._reconnect is not None:
                with contextlib.suppress(Exception):
                    await self._reconnect()
            raise Unavailable(f"{type(exc).__name__}: {exc}") from None
        finally:
            if probe:
                self._probing = False
        if self.down_since is not None:
            log.warning(
                f"redis reachable again; {self.what} resumed",
                extra={"outage_seconds": round(self._clock() - self.down_since, 3)},
            )
            self.down_since = None
        return result

    def _failed(self, now: float, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = now
            log.error(
                f"redis unavailable; {self.what} follow their failure policy until it returns",
                extra={"error": f"{type(exc).__name__}: {exc}"},
            )
        self._retry_at = now + self.retry_interval


_Queued = tuple[str | None, tuple[Any, ...], "asyncio.Future[Any]"]  # (the script's source, the command, its caller)


DEFER_SECONDS = 0.005


class TurnPipeline:
    """Commands issued in the same event-loop turn leave together, as one non-transactional pipeline.

    A busy gateway issues many commands per turn (limit decisions, cache lookups and stores). On a server
    (plain, TLS or Sentinel-managed) one connection is held and one pipeline at a time is in flight: commands
    issued meanwhile queue and leave together as the next one, so a pipeline costs one write, one read deadline
    and no connection checkout whatever the load (redis-py's per-command machinery, a pool checkout, a health
    check and a timeout per reply, costs more than the round trip on the request path). Redis Cluster runs its
    commands one by one (concurrently), each routed by its key's slot, redirects followed. Each pipeline runs
    through the Outage guard as one call; each caller gets its own result or its own error reply.

    A command nobody waits on (a limit's settlement, a cache store, after the answer went out) can be deferred:
    it leaves with the next pipeline, ahead of what that pipeline carries, or on its own after `DEFER_SECONDS`.
    Sent at once, a settlement's round trip would be in flight when the caller's next request asks for its
    decision, which then waited for both; deferred, the two share one round trip."""

    def __init__(self, client: RedisClient, outage: Outage):
        self._client = client
        self._outage = outage
        self._queued: list[_Queued] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._serial = not isinstance(client, RedisCluster)  # one pipeline in flight on one held connection
        self._connection: Any = None
        self._busy = False
        self._deferred: list[_Queued] = []
        self._deferred_timer: asyncio.TimerHandle | None = None

    def script(self, lua: str, *, deferred: bool = False) -> Callable[[list[str], list[Any]], Awaitable[Any]]:
        """A callable that runs `lua` by its SHA (loading it when a server does not know it yet); `deferred`
        for calls whose result nobody waits on soon (see the class)."""
        sha = hashlib.sha1(lua.encode()).hexdigest()

        def call(keys: list[str], args: list[Any]) -> Awaitable[Any]:
            return self._submit(lua, ("EVALSHA", sha, len(keys), *keys, *args), deferred=deferred)

        return call

    def command(self, *words: Any, deferred: bool = False) -> Awaitable[Any]:
        """One command (GET, SET, ...) in this turn's pipeline (`deferred`: see the class); its reply as hiredis
        parses it."""
        return self._submit(None, words, deferred=deferred)

    def _submit(self, lua: str | None, words: tuple[Any, ...], *, deferred: bool = False) -> Awaitable[Any]:
        if self._outage.refusing():
            raise Unavailable("redis is unavailable")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if deferred:
            self._deferred.append((lua, words, future))
            if self._deferred_timer is None:
                self._deferred_timer = loop.call_later(DEFER_SECONDS, self._flush_deferred)
            return future
        self._queued.append((lua, words, future))
        if len(self._queued) == 1 and not self._busy:
            loop.call_soon(self._flush)
        return future

    def _flush_deferred(self) -> None:
        self._take_deferred()
        self._flush()

    def _take_deferred(self) -> None:
        """The deferred calls join the queue, ahead of what was asked after them."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._deferred:
            self._queued[:0], self._deferred = self._deferred, []

    def _flush(self) -> None:
        if self._busy or not self._queued:
            return
        self._take_deferred()
        batch, self._queued = self._queued, []
        self._busy = self._serial
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._flushing.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if self._serial:
            self._busy = False
            self._flush()  # what queued while this pipeline was in flight

    async def _send(self, batch: list[_Queued]) -> None:
        results: list[Any]
        try:
            results = await self._outage.call(lambda: self._pipeline(batch))
        except Exception as exc:  # an outage (Unavailable) or an error not caused by one call: all get it
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, batch: list[_Queued]) -> list[Any]:
        results = await self._run([words for _, words, _ in batch])
        missing = [i for i, r in enumerate(results) if isinstance(r, rexc.NoScriptError) and batch[i][0]]
        if missing:  # first use, a restarted server, or a node that joined: load, then run those again
            for lua in {batch[i][0] or "" for i in missing}:
                await self._client.script_load(lua)
            retried = await self._run([batch[i][1] for i in missing])
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        failed = [r for r in results if isinstance(r, Exception) and is_outage(r)]
        if failed:
            # A server that said it cannot serve (LOADING, a demoted master's READONLY, ...) may be the wrong one
            # now: the held connection is let go, and the next pipeline's asks anew (Sentinel: where the master is).
            await self._let_go()
            if len(failed) == len(results):
                raise failed[0]  # the server cannot serve: the guard counts an outage
        # Some calls could not be served (a cluster node down): those callers alone are told so.
        return [Unavailable(f"{type(r).__name__}: {r}") if r in failed else r for r in results]

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if isinstance(self._client, RedisCluster):
            # redis-py's cluster pipeline refuses EVALSHA: each command on its own, routed by its keys' slot.
            cluster = self._client
            # Commands sent while a fresh client first learns the slots break each other's connections
            # (redis-py 8.1): learn them first, under redis-py's lock; a no-op once they are known.
            await cluster.initialize()
            return list(await asyncio.gather(*(_routed(cluster, words) for words in commands)))
        return await self._on_held_connection(self._client, commands)

    async def _on_held_connection(self, client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The pipeline packed by hiredis in one write on the held connection, the write and the replies (in
        order) under one deadline (the socket timeout): the same exchange as redis-py's pipeline. Any failure gives the
        connection back to the pool (redis-py has closed it on a connection error), and the next pipeline takes
        a fresh one."""
        payload = b"".join(hiredis.pack_command(words) for words in commands)
        pool = client.connection_pool
        if self._connection is None:
            self._connection = await pool.get_connection()
        connection = self._connection
        try:
            try:
                async with asyncio.timeout(connection.socket_timeout):
                    try:
                        await _write(connection, payload)
                    except rexc.ConnectionError:  # an idle connection the server closed: once more on a fresh one
                        await connection.disconnect()
                        await _write(connection, payload)
                    return await _read_replies(connection, len(commands))
            except TimeoutError:
                raise rexc.TimeoutError("Timeout talking to redis") from None
        except BaseException:
            await self._let_go()  # replies may still be on their way: never reuse it
            raise

    async def _let_go(self) -> None:
        """Close the held connection and give it back to the pool; the next pipeline takes a fresh one."""
        connection, self._connection = self._connection, None
        if connection is not None:
            assert isinstance(self._client, aioredis.Redis)  # only a plain client's pipelines hold a connection
            await connection.disconnect()
            await self._client.connection_pool.release(connection)

    async def drain(self) -> None:
        self._flush_deferred()
        while self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self._connection is not None and not isinstance(self._client, RedisCluster):
            connection, self._connection = self._connection, None
            await self._client.connection_pool.release(connection)


async def _write(connection: Any, payload: bytes) -> None:
    """redis-py's send_packed_command without its task per write (asyncio.wait_for makes one on Python 3.11):
    the caller's deadline covers the write. A connection not yet open, or a redis-py without a stream writer on
    its connections, takes redis-py's way."""
    writer = getattr(connection, "_writer", None)
    if writer is None or not connection.is_connected:
        await connection.send_packed_command(payload)
        return
    if connection.health_check_interval and asyncio.get_running_loop().time() > connection.next_health_check:
        await connection.check_health()
    try:
        writer.write(payload)
        await writer.drain()
    except OSError as exc:
        await connection.disconnect(nowait=True)
        raise rexc.ConnectionError(f"Error while writing to redis: {exc}") from exc
    except BaseException:
        await connection.disconnect(nowait=True)  # part of the pipeline may have left: never reuse it
        raise


async def _read_replies(connection: Any, count: int) -> list[Any]:
    """`count` replies in order, an error reply as its exception. With hiredis (RESP2), straight from the
    connection's hiredis reader: redis-py's per-reply path (a timeout context, its error text formatted in
    advance, two coroutines) cost more than the parsing. Otherwise, or on another redis-py, reply by reply."""
    parser = connection._parser
    reader: Any = getattr(parser, "_reader", None)
    direct = (
        isinstance(parser, _HiredisParser)
        and isinstance(reader, hiredis.Reader)
        and getattr(connection, "protocol", 2) in (2, "2", None)  # RESP3 may interleave push messages
    )
    if direct:
        results: list[Any] = []
        while len(results) < count:
            reply = reader.gets()
            if reply is _NOT_ENOUGH_DATA:
                try:
                    await parser.read_from_socket()
                except OSError as exc:
                    raise rexc.ConnectionError(f"Error while reading from redis: {exc}") from exc
                continue
            if isinstance(reply, rexc.ConnectionError):
                raise reply
            results.append(reply)
        if connection.health_check_interval:
            connection.next_health_check = asyncio.get_running_loop().time() + connection.health_check_interval
        return results
    results = []
    for _ in range(count):
        try:
            results.append(await connection.read_response(timeout=math.inf))
        except rexc.ResponseError as exc:  # this command's error reply; the connection stays in step
            results.append(exc)
    return results


async def _routed(client: RedisCluster, words: tuple[Any, ...]) -> Any:
    """One command; an error reply or an outage comes back as the result, as in a pipeline."""
    try:
        return await client.execute_command(*words)
    except rexc.RedisError as exc:
        return exc


def reconnector(client: RedisClient) -> Callable[[], Awaitable[None]] | None:
    """What to do after an outage-type failure: a Sentinel-managed (or plain) client drops its pooled
    connections, so the next one asks the sentinels (or DNS) where the master is now. Without this, a
    connection to a demoted master keeps getting refusals until that server is reconfigured, which can take
    many seconds. Redis Cluster follows its redirects and refreshes its slot map by itself."""
    if isinstance(client, RedisCluster):
        return None
    pool = client.connection_pool

    async def reconnect() -> None:
        await pool.disconnect()

    return reconnect


async def close(client: RedisClient) -> None:
    await client.aclose()
