"""The stage pool client against a real server: the pool's keys and auth, benching on cooldown statuses, another
key after a refusal, chat through the translator, and failures counted like upstream attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import start_app
from tollway_contract.model import Pool, PoolKey, Timeouts
from tollway_dataplane.pools import KeyStateRegistry, PoolRuntime
from tollway_dataplane.stages.poolclient import PoolCallError, PoolClient


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"path": request.path, "auth": request.headers.get("Authorization"), "body": body})
        if request.headers.get("Authorization") == "Bearer throttled":
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"})
        if request.path.endswith("/chat/completions"):
            answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "safe"}}]}
            return web.json_response(answer)
        return web.json_response({"results": [{"flagged": False}]})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner, port = await start_app(app)
    yield f"http://127.0.0.1:{port}/v1", seen
    await runner.cleanup()


def pool(base_url: str, keys: dict[str, str], provider: str = "openai-compatible") -> PoolRuntime:
    config = Pool(
        name="default/checks",
        provider=provider,
        base_url=base_url,
        keys=tuple(PoolKey(k) for k in keys),
        timeouts=Timeouts(first_byte=5),
        headers=(("X-Team", "safety"),),
    )
    return PoolRuntime(config, keys, KeyStateRegistry())


async def test_a_throttled_key_is_benched_and_the_next_one_answers(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    runtime = pool(url, {"a": "throttled", "b": "good"})
    async with aiohttp.ClientSession() as session:
        client = PoolClient(runtime, lambda: session)
        answers = [await client.post_json("moderations", {"input": ["x"]}) for _ in range(3)]
    assert answers == [{"results": [{"flagged": False}]}] * 3
    assert seen[0]["auth"] == "Bearer throttled" and all(s["auth"] == "Bearer good" for s in seen[1:])
    assert [k.index for k in runtime.key_order()] == [1]  # key 0 sits out its Retry-After
    assert all(s["path"] == "/v1/moderations" for s in seen)


async def test_chat_goes_through_the_translator(server: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = server
    async with aiohttp.ClientSession() as session:
        client = PoolClient(pool(url, {}), lambda: session)
        answer = await client.chat({"model": "guard", "messages": [{"role": "user", "content": "hi"}]})
    assert answer["choices"][0]["message"]["content"] == "safe"
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] is None  # a keyless pool sends no key
    assert seen[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]


async def test_failures_are_reasons_not_exceptions_of_the_transport() -> None:
    async with aiohttp.ClientSession() as session:
        client = PoolClient(pool("http://127.0.0.1:9/v1", {}), lambda: session)
        with pytest.raises(PoolCallError) as info:
            await client.post_json("moderations", {"input": "x"})
    assert info.value.reason == "connect-error"
    runtime = pool("http://127.0.0.1:9/v1", {"a": "k"})
    runtime.bench(runtime.keys[0], 60)
    with pytest.raises(PoolCallError) as info:
        await PoolClient(runtime, lambda: None).post_json("moderations", {})  # type: ignore[arg-type,return-value]
    assert info.value.reason == "all-keys-benched"
