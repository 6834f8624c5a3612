"""The response cache against a real gateway and the mock LLM: partitions, replay, caller control, single flight,
semantic matching, shadow mode, limits, and the provider's prompt-cache key."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, read_sse
from prometheus_client import REGISTRY as _DEFAULT  # noqa: F401 - the gateway's registry is its own
from tollway_dataplane.metrics import REGISTRY

CHAT = "/v1/chat/completions"


def cached_crs(upstream: str, cache: str, *, provider: str = "openai-compatible", extra: str = "") -> dict[str, str]:
    return {
        "base.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: mock, namespace: default}}
            spec:
              provider: {provider}
              baseURL: "{upstream}/v1"
              keys: [{{secretRef: {{name: keys, key: upstream}}}}]
              timeouts: {{firstByte: 5s, idle: 5s}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat, namespace: default}}
            spec:
              rules: [{{models: ["*"], backends: [{{pool: mock}}]}}]
              cache: {cache}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: alice, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: alice}}}}]}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: bob, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: bob}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{alice: sk-alice, bob: sk-bob, upstream: sk-upstream}}
        """
        + extra,
    }


def ask(question: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": question}], **extra}


async def post(gateway: GatewayHandle, body: dict[str, Any], **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    async with gateway.post(CHAT, body, **kwargs) as response:
        if body.get("stream"):
            return response.status, dict(response.headers), await read_sse(response)
        return response.status, dict(response.headers), await response.json()


async def upstream_calls(mock_llm: MockLLM) -> int:
    return len([r for r in await mock_llm.requests() if r["path"].endswith("/chat/completions")])


@pytest.fixture
async def cached(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(cached_crs(mock_llm.url, "{ttl: 10m}"))


async def test_a_repeated_question_is_a_hit_with_the_original_usage(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"content": "Paris.", "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    status, headers, first = await post(cached, ask())
    assert status == 200 and headers["x-tollway-cache"] == "miss"
    status, headers, second = await post(cached, ask())
    assert status == 200 and headers["x-tollway-cache"] == "hit"
    assert second["choices"] == first["choices"] and second["usage"]["prompt_tokens"] == 9
    assert await upstream_calls(mock_llm) == 1
    saved = REGISTRY.get_sample_value("tollway_cache_saved_tokens_total", {"route": "default/chat", "kind": "output"})
    assert saved is not None and saved >= 2


@pytest.mark.parametrize(
    ("change", "same_consumer"),
    [
        ({"model": "mock-gpt-mini"}, True),
        ({"temperature": 0.2}, True),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {"role": "user", "content": "What is the capital of France?"},
                ]
            },
            True,
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "What is the capital of France?"},
                ]
            },
            True,
        ),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, True),
        ({}, False),  # another consumer: scope consumer
    ],
)
async def test_partitions_never_share(
    cached: GatewayHandle, mock_llm: MockLLM, change: dict[str, Any], same_consumer: bool
) -> None:
    await post(cached, ask())
    body = ask() | change
    status, headers, _ = await post(cached, body, key="sk-alice" if same_consumer else "sk-bob")
    assert status == 200 and headers["x-tollway-cache"] == "miss"
    assert await upstream_calls(mock_llm) == 2


async def test_route_scope_shares_across_consumers(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, "{scope: route}"))
    await post(gateway, ask())
    _, headers, _ = await post(gateway, ask(), key="sk-bob")
    assert headers["x-tollway-cache"] == "hit"


async def test_stream_hit_replays_the_same_events_in_order(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"content": "one two three four five", "chunks": 5})
    _, headers, first = await post(cached, ask(stream=True))
    assert headers["x-tollway-cache"] == "miss"
    _, headers, second = await post(cached, ask(stream=True))
    assert headers["x-tollway-cache"] == "hit"
    assert len(second) > 3 and second == first  # byte-identical event payloads, [DONE] last
    assert second[-1] == b"[DONE]"
    # With usage asked for, the replay adds the usage chunk just before [DONE].
    _, _, third = await post(cached, ask(stream=True, stream_options={"include_usage": True}))
    assert third[-1] == b"[DONE]" and json.loads(third[-2])["usage"]["completion_tokens"] > 0
    assert third[:-2] == first[:-1]
    assert await upstream_calls(mock_llm) == 1


async def test_stream_entries_serve_whole_answers_and_the_reverse(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"content": "streamed answer text", "chunks": 3})
    _, _, events = await post(cached, ask(stream=True))
    _, headers, whole = await post(cached, ask())
    assert headers["x-tollway-cache"] == "hit"
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]
    )
    assert whole["choices"][0]["message"]["content"] == text == "streamed answer text"
    assert whole["choices"][0]["finish_reason"] == "stop"

    await mock_llm.script({"content": "a whole answer"})
    await post(cached, ask("Another question"))
    _, headers, replayed = await post(cached, ask("Another question", stream=True))
    assert headers["x-tollway-cache"] == "hit" and replayed[-1] == b"[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in replayed[:-1]]
    assert "".join(d.get("content") or "" for d in deltas) == "a whole answer"
    assert await upstream_calls(mock_llm) == 2


async def test_cache_control_from_the_caller(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    await post(cached, ask())
    _, headers, _ = await post(cached, ask(), headers={"Cache-Control": "no-cache"})
    assert headers["x-tollway-cache"] == "bypass"  # looked nothing up, went upstream, stored again
    _, headers, _ = await post(cached, ask(), headers={"Cache-Control": "no-store"})
    assert headers["x-tollway-cache"] == "bypass"
    _, headers, _ = await post(cached, ask(), headers={"Cache-Control": "max-age=3600"})
    assert headers["x-tollway-cache"] == "hit"
    await asyncio.sleep(1.1)
    _, headers, _ = await post(cached, ask(), headers={"Cache-Control": "max-age=1"})
    assert headers["x-tollway-cache"] == "miss"
    assert await upstream_calls(mock_llm) == 4
    # no-store neither reads nor writes: a fresh question asked with it is not kept.
    await post(cached, ask("Kept?"), headers={"Cache-Control": "no-store"})
    _, headers, _ = await post(cached, ask("Kept?"))
    assert headers["x-tollway-cache"] == "miss"


async def test_entries_expire(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, "{ttl: 1s}"))
    await post(gateway, ask())
    _, headers, _ = await post(gateway, ask())
    assert headers["x-tollway-cache"] == "hit"
    await asyncio.sleep(1.2)
    _, headers, _ = await post(gateway, ask())
    assert headers["x-tollway-cache"] == "miss"


@pytest.mark.parametrize(
    ("cache", "behaviour", "stream"),
    [
        ("{maxEntryBytes: 200}", {"content": "x" * 400}, False),
        ("{}", {"content": "cut short", "finish_reason": "length"}, False),
        ("{}", {"content": "cut short", "finish_reason": "length", "chunks": 2}, True),
        ("{}", {"tool_call": {"name": "lookup", "arguments": "{}"}}, False),
        ("{}", {"content": "broken", "chunks": 4, "reset_after_chunks": 2}, True),
    ],
)
async def test_what_is_not_kept(
    make_gateway: GatewayFactory, mock_llm: MockLLM, cache: str, behaviour: dict[str, Any], stream: bool
) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, cache))
    await mock_llm.script(behaviour, times=2)
    await post(gateway, ask(stream=stream))
    await asyncio.sleep(0.05)  # stores happen after the answer went out
    _, headers, _ = await post(gateway, ask(stream=stream))
    assert headers["x-tollway-cache"] == "miss"


async def test_tool_calls_are_kept_when_asked(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, "{cacheToolCalls: true}"))
    await mock_llm.script({"tool_call": {"name": "lookup", "arguments": '{"q": 1}'}})
    await post(gateway, ask())
    await asyncio.sleep(0.05)
    _, headers, body = await post(gateway, ask())
    assert headers["x-tollway-cache"] == "hit"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"


async def test_concurrent_identical_misses_make_one_upstream_call(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"content": "slow shared answer here", "chunks": 4, "chunk_delay_ms": 60})
    bodies = [ask("Same question", stream=i % 2 == 0) for i in range(20)]
    results = await asyncio.gather(*(post(cached, b) for b in bodies))
    assert await upstream_calls(mock_llm) == 1
    texts = set()
    for (status, _, answer), body in zip(results, bodies, strict=True):
        assert status == 200
        if body["stream"]:
            assert answer[-1] == b"[DONE]"
            chunks = [json.loads(e) for e in answer[:-1]]
            texts.add("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]))
        else:
            texts.add(answer["choices"][0]["message"]["content"])
    assert texts == {"slow shared answer here"}
    coalesced = REGISTRY.get_sample_value("tollway_cache_coalesced_total", {"route": "default/chat"})
    assert coalesced is not None and coalesced >= 19


async def test_a_hit_is_not_charged_against_token_limits(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    limit = """
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {name: budget, namespace: default}
            spec:
              limits: [{tokens: 60, window: 1h}, {requests: 4, window: 1h}]
    """
    gateway = await make_gateway(cached_crs(mock_llm.url, "{}", extra=limit))
    await mock_llm.script({"content": "ok", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}, times=10)
    body = ask(max_tokens=20)
    await post(gateway, body)
    await asyncio.sleep(0.05)  # the settlement of the miss lands
    statuses = []
    for _ in range(4):
        status, headers, _ = await post(gateway, body)
        statuses.append((status, headers.get("x-tollway-cache")))
        await asyncio.sleep(0.02)
    # Tokens: the miss used 30 of 60 and each hit reserves its estimate (28) and gets all of it back: were hits
    # charged, the second one would not fit. Requests: 4 per hour, and hits count, so the fifth is refused.
    assert statuses[:3] == [(200, "hit")] * 3
    assert statuses[3][0] == 429


SEMANTIC = (
    "{mode: semantic, semantic: {embedding: {pool: mock, model: mock-embedding, dimensions: 256}, threshold: 0.9}}"
)


async def test_semantic_hits_above_the_threshold_only(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, SEMANTIC))
    await mock_llm.script({"content": "Paris is the capital."}, path="/chat/completions")
    await post(gateway, ask("What is the capital of France?"))
    await asyncio.sleep(0.1)  # the vector is stored after the answer
    _, headers, body = await post(gateway, ask("what is the capital of france"))
    assert headers["x-tollway-cache"] == "semantic-hit"
    assert float(headers["x-tollway-cache-similarity"]) >= 0.9
    assert body["choices"][0]["message"]["content"] == "Paris is the capital."
    _, headers, _ = await post(gateway, ask("How do I bake sourdough bread at home?"))
    assert headers["x-tollway-cache"] == "miss"
    # Never across partitions: the same question from another consumer misses.
    _, headers, _ = await post(gateway, ask("what is the capital of france"), key="sk-bob")
    assert headers["x-tollway-cache"] == "miss"


async def test_shadow_mode_counts_without_serving(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    shadow = SEMANTIC.replace("threshold: 0.9}", "threshold: 0.9, shadow: true}")
    gateway = await make_gateway(cached_crs(mock_llm.url, shadow))
    labels = {"route": "default/chat", "outcome": "would_hit"}
    before = REGISTRY.get_sample_value("tollway_cache_shadow_total", labels) or 0
    agree_before = REGISTRY.get_sample_value("tollway_cache_shadow_total", labels | {"outcome": "agree"}) or 0
    await mock_llm.script({"content": "Paris."}, times=2, path="/chat/completions")
    await post(gateway, ask("What is the capital of France?"))
    await asyncio.sleep(0.1)
    _, headers, _ = await post(gateway, ask("what is the capital of france"))
    assert headers["x-tollway-cache"] == "miss"
    await asyncio.sleep(0.1)
    assert REGISTRY.get_sample_value("tollway_cache_shadow_total", labels) == before + 1
    agree = REGISTRY.get_sample_value("tollway_cache_shadow_total", labels | {"outcome": "agree"})
    assert agree == agree_before + 1
    assert await upstream_calls(mock_llm) == 2


@pytest.mark.parametrize(("provider", "sent"), [("openai", True), ("openai-compatible", False)])
async def test_prompt_cache_key_goes_to_openai_pools(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str, sent: bool
) -> None:
    gateway = await make_gateway(cached_crs(mock_llm.url, "{}", provider=provider))
    await post(gateway, ask(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]))
    await post(gateway, ask("Q2", messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "Q2"}]))
    keys = [r["body"].get("prompt_cache_key") for r in await mock_llm.requests()]
    if sent:
        assert keys[0] is not None and keys[0] == keys[1]  # one consumer, one system prompt: one key
    else:
        assert keys == [None, None]
    # A caller's own key is never replaced.
    await post(gateway, ask("Q3", prompt_cache_key="mine"))
    assert (await mock_llm.requests())[-1]["body"]["prompt_cache_key"] == "mine"


async def test_messages_callers_are_cached_in_their_own_partition(cached: GatewayHandle, mock_llm: MockLLM) -> None:
    message = {
        "model": "mock-gpt",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    async with cached.post("/v1/messages", message) as response:
        assert response.headers["x-tollway-cache"] == "miss"
        first = await response.json()
    async with cached.post("/v1/messages", message) as response:
        assert response.headers["x-tollway-cache"] == "hit"
        assert await response.json() == first
    assert first["type"] == "message"


# -- shared through Redis -------------------------------------------------------------------------------------


async def test_two_gateway_processes_share_entries_through_redis(
    tmp_path: Any, mock_llm: MockLLM, redis_server: Any
) -> None:
    import aiohttp
    from conftest import spawn_gateway, write_crs

    write_crs(tmp_path / "crs", cached_crs(mock_llm.url, SEMANTIC))
    processes = [await spawn_gateway(tmp_path / "crs", "--redis-url", redis_server.url) for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as session:

            async def ask_at(url: str, question: str) -> tuple[str, str]:
                headers = {"Authorization": "Bearer sk-alice"}
                async with session.post(f"{url}{CHAT}", json=ask(question), headers=headers) as response:
                    body = await response.json()
                    return response.headers["x-tollway-cache"], body["choices"][0]["message"]["content"]

            (_, first), (_, second) = processes
            # The second replica's first lookup starts its index (a scan, then the stream of inserts).
            assert (await ask_at(second, "Tell me about sourdough bread"))[0] == "miss"
            await mock_llm.script({"content": "Paris."}, path="/chat/completions")
            assert (await ask_at(first, "What is the capital of France?"))[0] == "miss"
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(redis_server.url)
            try:
                for _ in range(100):  # both answers' vectors are in the stream of inserts
                    if await client.xlen("tollway:cache:vectors") >= 2:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await client.aclose()
            await asyncio.sleep(1.0)  # the other replica follows the stream with short blocking reads
            result = await ask_at(second, "what is the capital of france")
            assert result == ("semantic-hit", "Paris.")
            assert await ask_at(second, "What is the capital of France?") == ("hit", "Paris.")
    finally:
        for process, _ in processes:
            process.terminate()
            await process.wait()


async def test_redis_down_means_misses_never_errors(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: Any
) -> None:
    from tollway_dataplane.redisconn import options_from_url

    gateway = await make_gateway(cached_crs(mock_llm.url, "{}"), redis=options_from_url(redis_server.url))
    await post(gateway, ask())
    await asyncio.sleep(0.05)
    _, headers, _ = await post(gateway, ask())
    assert headers["x-tollway-cache"] == "hit"
    redis_server.stop()
    for _ in range(3):
        status, headers, body = await post(gateway, ask())
        assert status == 200 and headers["x-tollway-cache"] == "miss"
        assert body["choices"][0]["message"]["content"]
    errors = REGISTRY.get_sample_value("tollway_cache_lookups_total", {"route": "default/chat", "result": "error"})
    assert errors is not None and errors >= 1


async def test_a_store_rides_ahead_of_the_next_lookup_in_one_round_trip(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import count_pipelines
    from tollway_dataplane import redisconn
    from tollway_dataplane.stages.cache.redis_store import RedisStore

    monkeypatch.setattr(redisconn, "DEFER_SECONDS", 0.5)  # long enough that a loaded machine cannot hit it early
    client = redisconn.connect(redisconn.options_from_url(redis_server.url))
    store = RedisStore(client, follow=False)
    pipeline = store._pipeline
    sent = count_pipelines(pipeline)
    try:
        storing = asyncio.create_task(store.put("k1", b"answer", 60.0))
        await asyncio.sleep(0.05)
        assert sent == []  # the answer went out; nobody waits on its store
        assert await store.get("k1") == b"answer"  # the store went first, in the same pipeline
        await storing
        assert sent == [2]
        sent.clear()
        await store.put("k2", b"other", 60.0)  # alone: it leaves after a moment
        assert sent == [1] and await store.get("k2") == b"other"
    finally:
        await store.close()
        await client.aclose()
