"""Where responses are kept: the in-process store's bounds, the Redis store against a real redis-server, and two
gateways sharing one Redis so a conversation started on one replica continues on another."""

from __future__ import annotations

import openai
import pytest
import redis.asyncio
from conftest import GatewayFactory, MockLLM, RedisServer
from fixtures.providers.support import provider_crs
from tollway_dataplane.caller.responses_store import MemoryResponseStore, RedisResponseStore, StoredResponse
from tollway_dataplane.errors import GatewayError
from tollway_dataplane.redisconn import options_from_url


def stored(response_id: str, text: str = "x") -> StoredResponse:
    output = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}]
    return StoredResponse(
        {"id": response_id, "object": "response", "output": output}, [{"role": "user", "content": "q"}]
    )


async def test_memory_store_scopes_by_consumer_and_deletes() -> None:
    store = MemoryResponseStore()
    await store.put("team/a", stored("resp_1", "answer"))
    found = await store.get("team/a", "resp_1")
    assert found is not None and found.conversation()[-1]["content"][0]["text"] == "answer"
    assert await store.get("team/b", "resp_1") is None
    assert not await store.delete("team/b", "resp_1")
    assert await store.delete("team/a", "resp_1") and await store.get("team/a", "resp_1") is None
    assert store.bytes == 0


async def test_memory_store_expires_and_stays_within_its_bytes() -> None:
    expired = MemoryResponseStore(ttl=0)
    await expired.put("c", stored("resp_1"))
    assert await expired.get("c", "resp_1") is None and expired.entries == 0
    size = len(stored("resp_0").encode())
    bounded = MemoryResponseStore(max_bytes=3 * size)
    for i in range(5):
        await bounded.put("c", stored(f"resp_{i}"))
    assert bounded.bytes <= 3 * size and bounded.entries == 3
    assert await bounded.get("c", "resp_0") is None and await bounded.get("c", "resp_4") is not None  # oldest go first
    tiny = MemoryResponseStore(max_bytes=10)
    await tiny.put("c", stored("resp_big"))  # larger than the whole store: not kept, nothing else evicted
    assert tiny.entries == 0


async def test_redis_store(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    store = RedisResponseStore(client, ttl=90)
    try:
        await store.put("team/a", stored("resp_1", "kept"))
        found = await store.get("team/a", "resp_1")
        assert found is not None and found.response["output"][0]["content"][0]["text"] == "kept"
        assert 0 < await client.ttl("tollway:responses:team/a:resp_1") <= 90
        assert await store.get("team/b", "resp_1") is None
        assert not await store.delete("team/b", "resp_1")
        assert await store.delete("team/a", "resp_1") and await store.get("team/a", "resp_1") is None
    finally:
        await store.close()


async def test_redis_store_unreachable_is_a_503_for_reads_and_a_warning_for_writes(redis_server: RedisServer) -> None:
    store = RedisResponseStore(
        redis.asyncio.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    )
    redis_server.stop()
    try:
        await store.put("c", stored("resp_1"))  # logged, never raised: the caller already has the answer
        with pytest.raises(GatewayError) as info:
            await store.get("c", "resp_1")
        assert (info.value.status, info.value.code) == (503, "response_store_unavailable")
    finally:
        await store.close()


async def test_replicas_sharing_redis_continue_each_others_conversations(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: RedisServer
) -> None:
    crs = provider_crs(mock_llm.url, "openai-compatible")
    first = await make_gateway(crs, redis=options_from_url(redis_server.url))
    second = await make_gateway(crs, redis=options_from_url(redis_server.url))
    a = openai.AsyncOpenAI(base_url=f"{first.url}/v1", api_key="sk-alice", max_retries=0)
    b = openai.AsyncOpenAI(base_url=f"{second.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script({"content": "Remembered on replica one."})
    started = await a.responses.create(model="mock-gpt", input="Remember the number 42.")
    continued = await b.responses.create(model="mock-gpt", input="Which number?", previous_response_id=started.id)
    assert "Remember the number 42." in str((await mock_llm.requests())[-1]["body"])
    assert (await b.responses.retrieve(started.id)).output_text == "Remembered on replica one."
    await a.responses.delete(continued.id)
    with pytest.raises(openai.NotFoundError):
        await b.responses.retrieve(continued.id)
