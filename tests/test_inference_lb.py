"""Inference-aware balancing with real servers: mock model servers on free loopback ports reporting vLLM or SGLang
metrics (pinned by the test, or simulated by the mock's engine) and a real gateway scraping them.

Nothing here asserts on timing: a test waits until the gateway has seen a scrape (its own metrics say so), then
checks where requests went.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import tollway_mock
from conftest import GatewayFactory, GatewayHandle, MockLLM, read_sse, start_app
from tollway_dataplane.metrics import REGISTRY

CHAT = "/v1/chat/completions"
POOL = "default/gpu"


@dataclass
class Server(MockLLM):
    """A mock model server; `address` is how the gateway names it (host:port)."""

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    async def pin(self, **load: Any) -> None:
        async with self.session.put(f"{self.url}/__mock/load", json=load) as response:
            assert response.status == 200, await response.text()

    async def served(self) -> int:
        return sum(1 for r in await self.requests() if r["path"].endswith("/chat/completions"))


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def servers() -> AsyncIterator[ServerFactory]:
    runners: list[Any] = []
    async with aiohttp.ClientSession() as session:

        async def make(**options: Any) -> Server:
            runner, port = await start_app(tollway_mock.create_app(**options))
            runners.append(runner)
            return Server(f"http://127.0.0.1:{port}", session)

        yield make
    for runner in runners:
        await runner.cleanup()


def lb_crs(servers: list[Server], endpoints: str = "", fallback: MockLLM | None = None) -> dict[str, str]:
    urls = ", ".join(f"{s.base_url}" for s in servers)
    fallback_pool = (
        f"""
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: hosted, namespace: default}}
            spec: {{provider: openai-compatible, baseURL: {fallback.base_url}}}
        """
        if fallback
        else ""
    )
    fallbacks = "fallbacks: [{pool: hosted, model: hosted-model}]" if fallback else ""
    return {
        "crs.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: gpu, namespace: default}}
            spec:
              provider: openai-compatible
              endpoints:
                urls: [{urls}]
                metrics: {{format: vllm, interval: 50ms}}
                {endpoints}
              timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
            {fallback_pool}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat, namespace: default}}
            spec:
              rules:
                - models: [mock-gpt]
                  backends: [{{pool: gpu}}]
                  {fallbacks}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: alice, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: alice-key}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: alice-key, namespace: default}}
            stringData: {{apiKey: sk-alice}}
        """
    }


def sample(name: str, server: Server, pool: str = POOL) -> float | None:
    return REGISTRY.get_sample_value(name, {"pool": pool, "endpoint": server.address})


async def until(check: Callable[[], Any], what: str, limit: float = 10.0) -> Any:
    """Poll `check` until it is truthy; `limit` (seconds) only bounds a broken test, it is not what is tested."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def scraped(servers: list[Server], **figures: float) -> None:
    """Until the gateway's last scrape of every server shows what it was pinned to (queue by default)."""
    name = figures.pop("metric", None) or "tollway_endpoint_queue"

    def seen() -> bool:
        return all(sample(str(name), s) == figures.get(f"s{i}", 0.0) for i, s in enumerate(servers))

    await until(seen, f"a scrape showing {figures}")


async def ask(gateway: GatewayHandle, system: str = "", user: str = "hi", **extra: Any) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    async with gateway.post(CHAT, {"model": "mock-gpt", "messages": messages, **extra}) as response:
        body = await response.json()
        return {"status": response.status, "headers": dict(response.headers), **body}


class AccessLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def access_log() -> Iterator[AccessLog]:
    handler = AccessLog()
    logger = logging.getLogger("tollway.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# --------------------------------------------------------------------------------------------------------------


async def test_picks_follow_the_scraped_metrics(
    make_gateway: GatewayFactory, servers: ServerFactory, access_log: AccessLog
) -> None:
    queued, full, idle = [await servers() for _ in range(3)]
    await queued.pin(waiting=5, running=4, kv_cache_usage=0.2)
    await full.pin(waiting=0, running=4, kv_cache_usage=0.9)
    await idle.pin(waiting=0, running=4, kv_cache_usage=0.1)
    gateway = await make_gateway(lb_crs([queued, full, idle]))
    await scraped([queued, full, idle], s0=5)
    for _ in range(4):  # one at a time: each finishes before the next, so the in-flight count stays 0
        assert (await ask(gateway))["status"] == 200
    assert (await queued.served(), await full.served(), await idle.served()) == (0, 0, 4)
    assert sample("tollway_endpoint_picks_total", idle) == 4
    assert [line["ai_log"]["endpoint"] for line in access_log.lines] == [idle.address] * 4
    assert access_log.lines[0]["ai_log"]["fallback_chain"][0]["endpoint"] == idle.address

    # The idle server fills up: the one with the fuller cache but no queue is next, the queued one last.
    await idle.pin(waiting=3, running=8, kv_cache_usage=0.5)
    await scraped([queued, full, idle], s0=5, s2=3)
    assert (await ask(gateway))["status"] == 200
    assert await full.served() == 1


async def test_sglang_metrics_are_read_too(make_gateway: GatewayFactory, servers: ServerFactory) -> None:
    busy, calm = await servers(metrics_format="sglang"), await servers(metrics_format="sglang")
    await busy.pin(waiting=2)
    files = lb_crs([busy, calm])
    files["crs.yaml"] = files["crs.yaml"].replace("format: vllm", "format: sglang")
    gateway = await make_gateway(files)
    await scraped([busy, calm], s0=2)
    assert (await ask(gateway))["status"] == 200
    assert (await busy.served(), await calm.served()) == (0, 1)


async def test_stale_and_failing_endpoints_are_skipped(make_gateway: GatewayFactory, servers: ServerFactory) -> None:
    stale, failing, healthy = [await servers() for _ in range(3)]
    await stale.pin(waiting=0)
    await failing.pin(waiting=0, running=1)
    await healthy.pin(waiting=0, running=2)
    gateway = await make_gateway(lb_crs([stale, failing, healthy], "cooldown: 1m"))
    await scraped([stale, failing, healthy], metric="tollway_endpoint_running", s1=1, s2=2)

    # The least-loaded server's metrics stop answering: after 3 intervals without a good scrape it is skipped.
    await stale.pin(status=500)
    await until(lambda: sample("tollway_endpoint_usable", stale) == 0, "the stale server to be skipped")
    assert sample("tollway_endpoint_scrape_errors_total", stale)

    # The next best fails the request (a 5xx): the same request is retried on another server, and the failing
    # one is skipped for the cooldown although its metrics still look fine.
    await failing.script({"status": 500, "error": "CUDA error: an illegal memory access"}, times=0)
    answer = await ask(gateway)
    assert answer["status"] == 200 and answer["headers"]["x-tollway-attempts"] == "2"
    assert (await failing.served(), await healthy.served()) == (1, 1)
    assert sample("tollway_endpoint_usable", failing) == 0
    for _ in range(3):
        assert (await ask(gateway))["status"] == 200
    assert (await stale.served(), await failing.served(), await healthy.served()) == (0, 1, 4)

    # Its metrics recover: the stale server takes traffic again.
    await stale.pin(waiting=0)
    await until(lambda: sample("tollway_endpoint_usable", stale) == 1, "the recovered server")
    assert (await ask(gateway))["status"] == 200
    assert await stale.served() == 1


async def test_a_saturated_pool_moves_to_the_fallback(
    make_gateway: GatewayFactory, servers: ServerFactory, mock_llm: MockLLM, access_log: AccessLog
) -> None:
    one, two = await servers(), await servers()
    await one.pin(waiting=4)
    await two.pin(waiting=2)
    gateway = await make_gateway(lb_crs([one, two], "maxQueue: 4", fallback=mock_llm))
    await scraped([one, two], s0=4, s1=2)
    saturated_before = REGISTRY.get_sample_value(
        "tollway_pool_saturated_total", {"route": "default/chat", "pool": POOL}
    )

    # Below maxQueue: the GPU pool serves.
    answer = await ask(gateway)
    assert answer["headers"]["x-tollway-pool"] == POOL and await two.served() == 1

    # Every server at maxQueue: saturated, like a 429, so the hosted fallback serves (the seed's scenario).
    await two.pin(waiting=5)
    await scraped([one, two], s0=4, s1=5)
    answer = await ask(gateway)
    assert answer["status"] == 200 and answer["headers"]["x-tollway-pool"] == "default/hosted"
    assert answer["model"] == "hosted-model"
    chain = access_log.lines[-1]["ai_log"]["fallback_chain"]
    assert [(a["pool"], a["outcome"]) for a in chain] == [(POOL, "saturated"), ("default/hosted", "ok")]
    saturated = REGISTRY.get_sample_value("tollway_pool_saturated_total", {"route": "default/chat", "pool": POOL})
    assert saturated == (saturated_before or 0) + 1
    assert (await one.served(), await two.served()) == (0, 1)


async def test_saturation_without_a_fallback_is_a_429_with_retry_after(
    make_gateway: GatewayFactory, servers: ServerFactory
) -> None:
    server = await servers()
    await server.pin(waiting=9)
    gateway = await make_gateway(lb_crs([server], "maxQueue: 4"))
    await scraped([server], s0=9)
    async with gateway.post(CHAT, {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"]["code"] == "upstream_saturated"
    assert await server.served() == 0


async def test_prefix_affinity_keeps_a_system_prompt_on_a_warm_server(
    make_gateway: GatewayFactory, servers: ServerFactory
) -> None:
    engine = tollway_mock.EngineSettings(cache_blocks=1000)  # a prefix cache, no delays
    pool = [await servers(engine=engine) for _ in range(3)]
    gateway = await make_gateway(lb_crs(pool, "picker: prefix-affinity"))
    await scraped(pool)
    prompts = [
        f"You are assistant number {n}. " + "Follow the house style guide to the letter. " * 30 for n in range(12)
    ]
    cached: list[int] = []
    for round_ in range(2):
        for n, system in enumerate(prompts):
            answer = await ask(gateway, system, f"question {round_}-{n}")
            assert answer["status"] == 200
            cached.append(answer["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0))
    by_prompt: dict[str, set[str]] = {}
    for server in pool:
        for request in await server.requests():
            by_prompt.setdefault(request["body"]["messages"][0]["content"], set()).add(server.address)
    assert all(len(where) == 1 for where in by_prompt.values()), by_prompt  # each prefix stays on one server
    assert len({next(iter(w)) for w in by_prompt.values()}) > 1  # and the prefixes spread over the servers
    assert cached[:12] == [0] * 12 and all(c > 0 for c in cached[12:])  # so every repeat hits a warm cache


async def test_in_flight_streams_count_against_their_endpoint(
    make_gateway: GatewayFactory, servers: ServerFactory
) -> None:
    one, two = await servers(), await servers()
    gateway = await make_gateway(lb_crs([one, two]))
    await scraped([one, two])
    await one.script({"chunks": 3, "chunk_delay_ms": 30}, times=0)
    await two.script({"chunks": 3, "chunk_delay_ms": 30}, times=0)
    body = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway.post(CHAT, body) as first, gateway.post(CHAT, body) as second:
        # Two streams at once: the second goes to the other server, whose queue estimate is lower.
        assert sum(sample("tollway_endpoint_in_flight", s) or 0 for s in (one, two)) == 2
        assert sample("tollway_endpoint_in_flight", one) == sample("tollway_endpoint_in_flight", two) == 1
        assert (await read_sse(first))[-1] == b"[DONE]" and (await read_sse(second))[-1] == b"[DONE]"
    await until(
        lambda: sample("tollway_endpoint_in_flight", one) == sample("tollway_endpoint_in_flight", two) == 0, "released"
    )


async def test_an_endpoint_removed_from_the_config_stops_receiving_traffic(
    make_gateway: GatewayFactory, servers: ServerFactory
) -> None:
    kept, removed = await servers(), await servers()
    gateway = await make_gateway(lb_crs([kept, removed], "picker: round-robin"))
    for _ in range(4):
        assert (await ask(gateway))["status"] == 200
    assert (await kept.served(), await removed.served()) == (2, 2)
    gateway.write(lb_crs([kept], "picker: round-robin"))
    assert await gateway.reload()
    for _ in range(4):
        assert (await ask(gateway))["status"] == 200
    assert (await kept.served(), await removed.served()) == (6, 2)
    assert sample("tollway_endpoint_picks_total", removed) is None  # no longer exported


async def test_the_mock_engine_queues_beyond_its_slots_and_reports_it(servers: ServerFactory) -> None:
    server = await servers(engine=tollway_mock.EngineSettings(slots=1))
    await server.script({"chunks": 50, "chunk_delay_ms": 20}, times=0)
    body = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}

    async def metrics() -> str:
        async with server.session.get(f"{server.url}/metrics") as response:
            return await response.text()

    async with server.session.post(f"{server.base_url}/chat/completions", json=body) as first:
        await first.content.readline()
        second = asyncio.ensure_future(server.session.post(f"{server.base_url}/chat/completions", json=body))

        async def queued() -> str | None:
            text = await metrics()
            return text if 'vllm:num_requests_waiting{engine="0",model_name="mock-gpt"} 1.0' in text else None

        page = await until(queued, "a queued request")
        assert 'vllm:num_requests_running{engine="0",model_name="mock-gpt"} 1.0' in page
        second.cancel()


async def test_a_server_error_benches_the_endpoint_not_the_key(
    make_gateway: GatewayFactory, servers: ServerFactory
) -> None:
    broken, fine = await servers(), await servers()
    await broken.pin(waiting=0, running=0)
    await fine.pin(waiting=0, running=3)
    files = lb_crs([broken, fine])
    files["crs.yaml"] = files["crs.yaml"].replace(
        "provider: openai-compatible\n              endpoints:",
        "provider: openai-compatible\n              keys: [{secretRef: {name: gpu-key}}]\n              endpoints:",
    )
    files["key.yaml"] = """
        apiVersion: v1
        kind: Secret
        metadata: {name: gpu-key, namespace: default}
        stringData: {token: sk-the-only-key}
    """
    gateway = await make_gateway(files)
    await scraped([broken, fine], metric="tollway_endpoint_running", s1=3)
    await broken.script({"status": 503, "error": "engine is restarting"}, times=0)
    answer = await ask(gateway)
    assert answer["status"] == 200 and answer["headers"]["x-tollway-attempts"] == "2"
    assert [r["api_key"] for r in await fine.requests()] == ["sk-the-only-key"]  # the same key, on the other server
    assert REGISTRY.get_sample_value("tollway_benched_keys", {"pool": POOL}) == 0
    assert (await ask(gateway))["status"] == 200  # the key still works; the broken server is skipped
    assert (await broken.served(), await fine.served()) == (1, 2)
