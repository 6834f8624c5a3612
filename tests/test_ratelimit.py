"""Token and request limits: burst-proof reservations, settlement, overrides, Redis shared state and outages."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import GatewayFactory, MockLLM, RedisServer, count_pipelines, read_sse, spawn_gateway, write_crs
from redis import exceptions as rexc
from tollway_contract.model import Limit, RateLimit
from tollway_dataplane import redisconn
from tollway_dataplane.ratelimit.backends import MemoryBackend, RedisBackend, ScriptFailed
from tollway_dataplane.ratelimit.gcra import LimitSpec, decide, settle
from tollway_dataplane.ratelimit.limiter import RateLimiter, RequestFacts
from tollway_dataplane.redisconn import RedisOptions
from tollway_dataplane.usage import Usage

CHAT = "/v1/chat/completions"
# 11 characters of content -> an input estimate of 3 tokens; with max_tokens 7 each request reserves 10.
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 7}
# The mock reports exactly the estimate. (With a smaller real usage, refunds would let an 11th request in
# later in the burst, which is correct: the budget is in tokens, not requests.)
EXACT_USAGE = {"usage": {"prompt_tokens": 3, "completion_tokens": 7}}


def limited_crs(upstream: str, limits: str, *, extra_spec: str = "", key: str = "consumer") -> dict[str, str]:
    return {
        "base.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: mock, namespace: default}}
            spec: {{provider: openai-compatible, baseURL: "{upstream}/v1"}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat, namespace: default}}
            spec:
              rules: [{{models: ["*"], backends: [{{pool: mock}}]}}]
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: alice, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: alice}}}}]}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: vip, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: vip}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{alice: sk-alice, vip: sk-vip}}
        """,
        "limit.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {{name: budget, namespace: default}}
            spec:
              key: {key}
              message: "Team budget used up, try again later."
              limits: {limits}
              {extra_spec}
        """,
    }


async def burst(session: aiohttp.ClientSession, urls: list[str], count: int, key: str = "sk-alice") -> list[int]:
    headers = {"Authorization": f"Bearer {key}"}

    async def one(i: int) -> int:
        async with session.post(urls[i % len(urls)] + CHAT, json=BODY, headers=headers) as response:
            await response.read()
            return response.status

    return list(await asyncio.gather(*(one(i) for i in range(count))))


# -- the arithmetic -----------------------------------------------------------------------------------------


def test_gcra_admits_a_full_window_then_refills_smoothly() -> None:
    spec = LimitSpec(key="k", amount=100, window=60.0, cost=10)
    tat: float | None = None
    admitted = 0
    for _ in range(15):
        decision, new = decide((spec,), [tat], now=1000.0)
        if decision.allowed:
            admitted += 1
            tat = new[0]
    assert admitted == 10
    decision, _ = decide((spec,), [tat], now=1000.0)
    assert not decision.allowed and decision.retry_after == pytest.approx(6.0)
    decision, _ = decide((spec,), [tat], now=1006.0)  # 6 s later, 10 tokens have come back
    assert decision.allowed


def test_settle_refunds_and_charges() -> None:
    spec = LimitSpec(key="k", amount=100, window=100.0, cost=50)
    decision, [tat] = decide((spec,), [None], now=0.0)
    assert decision.states[0].remaining == 50
    refunded = settle(tat, -40, spec.period, now=0.0)  # used 10 of the 50 reserved
    decision, _ = decide((LimitSpec("k", 100, 100.0, 0),), [refunded], now=0.0)
    assert decision.states[0].remaining == 90


def test_all_limits_of_a_decision_are_atomic() -> None:
    wide = LimitSpec(key="a", amount=1000, window=60.0, cost=10)
    full = LimitSpec(key="b", amount=5, window=60.0, cost=5)  # its stored TAT says the budget is spent
    decision, new_tats = decide((wide, full), [None, 55.0], now=0.0)
    assert not decision.allowed and decision.states[0].remaining == 1000  # the wide limit was not charged
    decision, _ = decide((wide, LimitSpec("b", 5, 60.0, 0)), [None, None], now=0.0)
    assert decision.allowed and new_tats[0] == pytest.approx(0.6)  # what the wide one would have stored


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
async def test_backends_agree(backend_kind: str, redis_server: RedisServer) -> None:
    backend = MemoryBackend() if backend_kind == "memory" else RedisBackend(RedisOptions(redis_server.url))
    try:
        specs = (LimitSpec("tollway:{t}:a", 100, 60.0, 30), LimitSpec("tollway:{t}:b", 3, 60.0, 1))
        results = [await backend.reserve(specs) for _ in range(5)]
        assert [r.allowed for r in results] == [True, True, True, False, False]
        assert [s.remaining for s in results[2].states] == [10, 0]
        await backend.adjust([("tollway:{t}:a", -30, 0.6)])
        after = await backend.reserve((LimitSpec("tollway:{t}:a", 100, 60.0, 0),))
        assert after.states[0].remaining == 40
    finally:
        await backend.close()


async def test_a_settlement_rides_ahead_of_the_next_decision_in_one_round_trip(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redisconn, "DEFER_SECONDS", 0.5)  # long enough that a loaded machine cannot hit it early
    backend = RedisBackend(RedisOptions(redis_server.url))
    pipeline = backend._pipeline
    sent = count_pipelines(pipeline)
    spec = LimitSpec("tollway:{s}:a", 100, 60.0, 100)
    try:
        await backend.adjust([(spec.key, -100, 0.6)])  # both scripts known to the server (a first use reloads)
        assert (await backend.reserve((spec,))).allowed  # the whole budget held
        sent.clear()
        settling = asyncio.create_task(backend.adjust([(spec.key, -100, 0.6)], waited_on=False))
        await asyncio.sleep(0.05)  # the settlement is queued, not sent: nobody waits on it
        assert sent == []
        decision = await backend.reserve((spec,))
        await settling
        assert decision.allowed  # the refund went first, in the same pipeline
        assert sent == [2]
        sent.clear()
        started = time.perf_counter()
        await backend.adjust([(spec.key, -100, 0.6)], waited_on=False)  # alone: it leaves after a moment
        assert sent == [1] and 0.4 < time.perf_counter() - started < 5.0
        assert (await backend.reserve((spec,))).allowed
        sent.clear()
        await backend.adjust([(spec.key, -100, 0.6)])  # a release: its answer waits on it, so at once
        assert sent == [1]
    finally:
        await backend.close()


async def test_a_turn_pipeline_gives_each_caller_its_own_reply(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replies read straight from the held connection's parser: a value larger than one socket read, an error
    reply in the middle (that caller's alone), nil and integers, and the connection in step afterwards."""

    async def per_reply(*args: object, **kwargs: object) -> None:
        raise AssertionError("a reply was read through redis-py's per-reply path")

    client = redisconn.connect(RedisOptions(redis_server.url))
    pipeline = redisconn.TurnPipeline(client, redisconn.Outage("test"))
    big = bytes(range(256)) * 8192  # 2 MiB: many reads of the socket
    try:
        await pipeline.command("PING")  # connected (the handshake's replies are redis-py's to read)
        monkeypatch.setattr(client.connection_pool.connection_class, "read_response", per_reply)
        sent = count_pipelines(pipeline)
        replies = await asyncio.gather(
            pipeline.command("SET", "big", big),
            pipeline.command("GET", "big"),
            pipeline.command("LPUSH", "list", "x"),
            pipeline.command("GET", "list"),  # WRONGTYPE: an error reply for this caller only
            pipeline.command("GET", "missing"),
            pipeline.command("INCRBY", "n", 41),
            return_exceptions=True,
        )
        assert sent == [6]
        assert replies[0] in (True, b"OK") and replies[1] == big and replies[2] == 1
        assert isinstance(replies[3], rexc.ResponseError) and "WRONGTYPE" in str(replies[3])
        assert replies[4] is None and replies[5] == 41
        assert await pipeline.command("INCR", "n") == 42  # the same connection, still in step
    finally:
        await pipeline.drain()
        await client.aclose()


async def test_settlements_of_one_turn_are_summed_into_one_call_per_hash_tag(redis_server: RedisServer) -> None:
    backend = RedisBackend(RedisOptions(redis_server.url))
    limiter = RateLimiter(backend)
    tokens = RateLimit("tokens", ("r",), limits=(Limit(window=60.0, tokens=1000),))
    requests = RateLimit("requests", ("r",), limits=(Limit(window=60.0, requests=100),))
    facts = {
        name: RequestFacts(name, "h", "r", "m", "127.0.0.1", {}, input_estimate=40, output_estimate=60)
        for name in ("alice", "bob")
    }
    try:
        alice = [await limiter.reserve((tokens, requests), facts["alice"]) for _ in range(3)]
        bob = await limiter.reserve((tokens,), facts["bob"])
        await backend.adjust([("tollway:{warm-up}:t", 0, 1.0)])  # the server knows the script from here on
        assert alice[-1].headers["x-ratelimit-remaining-tokens"] == "700"
        sent = count_pipelines(backend._pipeline)
        for reservation, used in zip(alice, (10, 20, 130), strict=True):  # refunds 90 and 80, charges 30 more
            limiter.settle_soon(reservation, Usage(input_tokens=used, output_tokens=0))
        limiter.settle_soon(bob, Usage(input_tokens=100, output_tokens=0))  # exactly the estimate: nothing to send
        await limiter.drain()
        await backend._pipeline.drain()
        # One script call for alice's token key: the request counts stand (each forwarded request counts one),
        # bob's settlement changes nothing.
        assert sum(sent) == 1, sent
        after = await limiter.reserve((tokens, requests), facts["alice"])
        assert after.headers["x-ratelimit-remaining-tokens"] == str(1000 - 160 - 100)
        assert after.headers["x-ratelimit-remaining-requests"] == str(100 - 4)
    finally:
        await backend.close()


# -- through the gateway ------------------------------------------------------------------------------------


async def test_burst_of_50_against_a_budget_of_10(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{tokens: 100, window: 1m}]"))
    await mock_llm.script(EXACT_USAGE, times=0)  # real usage = the estimate: settlement refunds nothing
    statuses = await burst(handle.session, [handle.url], 50)
    assert statuses.count(200) == 10 and statuses.count(429) == 40


async def test_limited_answer_and_headers(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{requests: 2, window: 1m}, {tokens: 1000, window: 1m}]"))
    for expected_remaining in ("1", "0"):
        async with handle.post(CHAT, BODY) as response:
            assert response.status == 200
            assert response.headers["x-ratelimit-limit-requests"] == "2"
            assert response.headers["x-ratelimit-remaining-requests"] == expected_remaining
            assert response.headers["x-ratelimit-limit-tokens"] == "1000"
            assert int(response.headers["x-ratelimit-remaining-tokens"]) <= 990
            assert response.headers["x-ratelimit-reset-tokens"].endswith("s")
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 429
        error = (await response.json())["error"]
        assert error["message"] == "Team budget used up, try again later."
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert int(response.headers["Retry-After"]) >= 1
        assert response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_window_rollover(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{requests: 2, window: 1s}]"))
    assert await burst(handle.session, [handle.url], 3) in ([200, 200, 429], [200, 429, 200], [429, 200, 200])
    await asyncio.sleep(1.05)
    assert sorted(await burst(handle.session, [handle.url], 2)) == [200, 200]


async def test_overrides(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    files = limited_crs(
        mock_llm.url,
        "[{requests: 1, window: 1m}]",
        extra_spec="overrides: [{match: {consumer: vip}, limits: [{requests: 5, window: 1m}]}]",
    )
    handle = await make_gateway(files)
    assert sorted(await burst(handle.session, [handle.url], 5, key="sk-alice")) == [200] + [429] * 4
    assert sorted(await burst(handle.session, [handle.url], 6, key="sk-vip")) == [200] * 5 + [429]


async def test_keys_by_header_separate_budgets(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{requests: 1, window: 1m}]", key="header:X-Tenant"))
    for tenant, expected in (("a", 200), ("b", 200), ("a", 429)):
        async with handle.post(CHAT, BODY, headers={"X-Tenant": tenant}) as response:
            assert response.status == expected


async def remaining_tokens(handle: object) -> int:
    """Remaining tokens as the next request sees them, plus that request's own reservation (10)."""
    async with handle.post(CHAT, BODY) as response:  # type: ignore[attr-defined]
        assert response.status == 200
        return int(response.headers["x-ratelimit-remaining-tokens"]) + 10


async def test_stream_usage_is_settled(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{tokens: 10000, window: 1h}]"))
    await mock_llm.script({"usage": {"prompt_tokens": 100, "completion_tokens": 200}})
    async with handle.post(CHAT, {**BODY, "stream": True, "max_tokens": 2000}) as response:
        assert (await read_sse(response))[-1] == b"[DONE]"
    await asyncio.sleep(0.1)  # settlement runs after the response
    before = await remaining_tokens(handle)
    assert 10000 - 300 - 30 <= before <= 10000 - 300  # the reserved 2003 came back, 300 were charged


async def test_stream_settles_when_the_client_disconnects(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{tokens: 10000, window: 1h}]"))
    await mock_llm.script({"chunks": 50, "chunk_delay_ms": 100})
    response = await handle.post(CHAT, {**BODY, "stream": True, "max_tokens": 5000})
    assert int(response.headers["x-ratelimit-remaining-tokens"]) == 10000 - 5003
    await response.content.readline()
    response.close()
    await asyncio.sleep(0.3)
    remaining = await remaining_tokens(handle)
    assert remaining >= 10000 - 100, remaining  # the 5003 reserved were settled down to what was streamed


async def test_two_processes_share_one_budget(tmp_path: Path, mock_llm: MockLLM, redis_server: RedisServer) -> None:
    crs = tmp_path / "crs"
    # failurePolicy closed: even a Redis call timing out on a loaded machine cannot let an extra request through.
    write_crs(crs, limited_crs(mock_llm.url, "[{tokens: 100, window: 1m}]", extra_spec="failurePolicy: closed"))
    processes = [await spawn_gateway(crs, "--redis-url", redis_server.url) for _ in range(2)]
    await mock_llm.script(EXACT_USAGE, times=0)
    try:
        async with aiohttp.ClientSession() as session:
            statuses = await burst(session, [url for _, url in processes], 50)
        assert statuses.count(200) <= 10 and statuses.count(429) >= 30, sorted(statuses)
    finally:
        for process, _ in processes:
            process.terminate()
            await process.wait()


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_redis_outage_and_recovery(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: RedisServer, policy: str
) -> None:
    files = limited_crs(mock_llm.url, "[{requests: 3, window: 1m}]", extra_spec=f"failurePolicy: {policy}")
    handle = await make_gateway(files, redis=RedisOptions(redis_server.url))
    assert sorted(await burst(handle.session, [handle.url], 4)) == [200, 200, 200, 429]
    redis_server.stop()
    started = time.perf_counter()
    statuses = await burst(handle.session, [handle.url], 5)
    elapsed = time.perf_counter() - started
    print(f"\n5 requests during a Redis outage ({policy}) answered in {elapsed * 1000:.0f} ms")
    if policy == "open":
        assert statuses == [200] * 5  # no limit while its state is unreachable
    else:
        assert statuses == [503] * 5
    redis_server.start()  # a fresh, empty Redis on the same port
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        async with handle.post(CHAT, BODY) as response:
            if response.status == 200 and "x-ratelimit-remaining-requests" in response.headers:
                break
    else:
        raise AssertionError("limiting did not resume after Redis came back")
    assert sorted(await burst(handle.session, [handle.url], 3)) == [200, 200, 429]


async def test_limiter_latency_on_loopback_redis(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a timing assert: prints the added latency of one decision so the figure is visible in CI output."""
    backend = RedisBackend(RedisOptions(redis_server.url))
    try:
        specs = (LimitSpec("tollway:{bench}:t", 10**9, 60.0, 10), LimitSpec("tollway:{bench}:r", 10**9, 60.0, 1))
        samples = []
        for _ in range(1000):
            started = time.perf_counter()
            await backend.reserve(specs)
            samples.append(time.perf_counter() - started)
        samples.sort()
        with capsys.disabled():
            print(
                f"\nlimiter decision with Redis on loopback: p50 {statistics.median(samples) * 1e6:.0f} us, "
                f"p99 {samples[int(len(samples) * 0.99)] * 1e6:.0f} us"
            )
    finally:
        await backend.close()


# -- hostile values and error replies -------------------------------------------------------------------------


async def test_one_request_cannot_switch_limits_off(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: RedisServer
) -> None:
    """An absurd max_tokens used to make the Redis script fail (`invalid expire time`), which counted as an
    outage: for a second, failurePolicy open let everyone through."""
    handle = await make_gateway(
        limited_crs(mock_llm.url, "[{tokens: 100, window: 1m}]"), redis=RedisOptions(redis_server.url)
    )
    await mock_llm.script(EXACT_USAGE, times=0)
    async with handle.post(CHAT, {**BODY, "max_tokens": -1_000_000_000_000}) as response:
        await response.read()  # whatever intake says about it, it must not touch anyone else's limits
    statuses = await burst(handle.session, [handle.url], 30)
    assert statuses.count(200) <= 10 and statuses.count(429) >= 20, sorted(statuses)


async def test_an_error_reply_is_not_an_outage(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url)
    await client.lpush("tollway:{t}:broken", "not a timestamp")  # a reply of WRONGTYPE for this key only
    await client.set("tollway:{t}:garbage", "not a number")
    await client.aclose()
    backend = RedisBackend(RedisOptions(redis_server.url))
    try:
        with pytest.raises(ScriptFailed, match="WRONGTYPE"):
            await backend.reserve((LimitSpec("tollway:{t}:broken", 10, 60.0, 1),))
        decision = await backend.reserve((LimitSpec("tollway:{t}:fine", 10, 60.0, 1),))  # no "down for a moment"
        assert decision.allowed and decision.states[0].remaining == 9
        decision = await backend.reserve((LimitSpec("tollway:{t}:garbage", 10, 60.0, 1),))  # counts as empty
        assert decision.allowed and decision.states[0].remaining == 9
        for cost in (-(10**15), 10**15):
            decision = await backend.reserve((LimitSpec("tollway:{t}:x", 10, 2592000.0, cost),))
            assert decision.states[0].remaining in (0, 10)
        await backend.adjust([("tollway:{t}:x", 10**18, 1e9), ("tollway:{t}:y", -(10**18), 1e9)])
    finally:
        await backend.close()


async def test_limiter_clamps_what_a_request_claims(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(limited_crs(mock_llm.url, "[{tokens: 100, window: 1m}]"))
    await mock_llm.script({"usage": {"prompt_tokens": 10**15, "completion_tokens": 10**15}})
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 200
    await asyncio.sleep(0.1)
    async with handle.post(CHAT, BODY) as response:  # the debt is bounded: limited, with a finite Retry-After
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 10 * 60 + 60
