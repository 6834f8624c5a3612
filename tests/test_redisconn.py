"""Redis options, URL forms, what counts as an outage, and the outage guard: no servers needed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis import exceptions as rexc
from tollway_cli.main import _redis_options, build_parser
from tollway_dataplane.redisconn import Outage, Unavailable, is_outage, options_from_url, parse_sentinels


def test_sentinel_url_and_flags() -> None:
    options = options_from_url("redis+sentinel://tollway:pw@h1:26379,h2/mymaster/2")
    assert options.sentinels == (("h1", 26379), ("h2", 26379)) and options.sentinel_master == "mymaster"
    assert options.url.endswith("/2") and not options.tls
    assert options_from_url("rediss+sentinel://h1:1/m").tls
    assert "pw" not in options.describe()
    with pytest.raises(ValueError, match="names the master"):
        options_from_url("redis+sentinel://h1:26379")
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_sentinels("h1:port")
    with pytest.raises(ValueError, match="unsupported"):
        options_from_url("http://h1")


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (rexc.ConnectionError("refused"), True),
        (rexc.TimeoutError("slow"), True),
        (TimeoutError(), True),
        (rexc.ClusterDownError("CLUSTERDOWN"), True),
        (rexc.ResponseError("NOREPLICAS Not enough good replicas to write."), True),
        (rexc.ResponseError("READONLY You can't write against a read only replica."), True),
        # What redis-py's parsers make of those replies: the code becomes the class and leaves the text.
        (rexc.ReadOnlyError("You can't write against a read only replica."), True),
        (rexc.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (rexc.ResponseError("ERR invalid expire time in 'set' command"), False),
        (rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
    ],
)
def test_what_is_an_outage(error: Exception, outage: bool) -> None:
    assert is_outage(error) is outage


async def test_outage_guard_probes_one_call_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    guard = Outage("rate limits", retry_interval=0.1, clock=lambda: now[0])
    gate = asyncio.Event()

    async def down() -> None:
        raise rexc.ConnectionError("refused")

    async def slow_probe() -> str:
        await gate.wait()
        return "ok"

    with caplog.at_level(logging.WARNING, logger="tollway.redis"):
        with pytest.raises(Unavailable):
            await guard.call(down)
        assert guard.down and guard.refusing()
        with pytest.raises(Unavailable):  # within the interval: no call is even tried
            await guard.call(slow_probe)
        now[0] = 0.2
        probe = asyncio.ensure_future(guard.call(slow_probe))
        await asyncio.sleep(0)
        with pytest.raises(Unavailable):  # a probe is in flight: the others do not wait on it
            await guard.call(slow_probe)
        gate.set()
        assert await probe == "ok" and not guard.down
        with pytest.raises(rexc.ResponseError):  # an error reply passes through and is no outage
            await guard.call(_wrongtype)
        assert not guard.down
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1 and sum("reachable again" in m for m in messages) == 1


async def _wrongtype() -> None:
    raise rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


def test_cli_redis_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    def parse(*argv: str) -> object:
        return _redis_options(build_parser().parse_args(["run", "--crs", "x", *argv]))

    monkeypatch.setenv("TOLLWAY_REDIS_PASSWORD", "from-env")
    assert parse() is None
    options = parse("--redis-sentinel", "a:1,b:2", "--redis-sentinel-master", "m", "--redis-username", "u")
    assert options.sentinels == (("a", 1), ("b", 2)) and options.password == "from-env" and options.username == "u"  # type: ignore[attr-defined]
    assert parse("--redis-url", "redis://c:7000", "--redis-cluster").cluster  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="sentinel-master"):
        parse("--redis-sentinel", "a:1")
    with pytest.raises(ValueError, match="go together"):
        parse("--redis-url", "rediss://h:1", "--redis-client-cert", "c.pem")
    with pytest.raises(OSError):
        parse("--redis-url", "rediss://h:1", "--redis-ca-file", "/nonexistent/ca.pem")
    run = next(a for a in build_parser()._actions if a.dest == "command").choices["run"]  # type: ignore[attr-defined]
    flags = {flag for action in run._actions for flag in action.option_strings}
    assert "--redis-password" not in flags  # no flag takes a password: it would show in `ps`
