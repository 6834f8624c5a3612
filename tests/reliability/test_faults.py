"""The fault suite: upstreams that reset, go silent, send junk or stop early; Redis killed and frozen; reloads and
SIGTERM under open streams. Each test names the promise it checks (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, RedisServer, read_sse, spawn_gateway, write_crs
from harness import figures
from tollway_dataplane.redisconn import options_from_url

CHAT = "/v1/chat/completions"
# A guard against a test hanging for good (not a timing assert): far beyond every timeout configured here.
GUARD = 10.0


def crs(
    upstream: str,
    *,
    retry: str = "{attempts: 0}",
    fallback: bool = False,
    extra: str = "",
    provider: str = "openai-compatible",
) -> dict[str, str]:
    """One pool with one key and short timeouts (and, for fallbacks, a second pool at the same mock)."""
    fallbacks = "fallbacks: [{pool: backup, model: backup-model}]" if fallback else ""
    base = f"{upstream}/v1" if provider.startswith("openai") else upstream
    return {
        "all.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: primary, namespace: default}}
            spec:
              provider: {provider}
              baseURL: {base}
              keys: [{{secretRef: {{name: keys, key: primary}}}}]
              timeouts: {{connect: 1s, firstByte: 2s, idle: 400ms}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: backup, namespace: default}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              keys: [{{secretRef: {{name: keys, key: backup}}}}]
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{primary: primary-key, backup: backup-key, alice: sk-alice}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat, namespace: default}}
            spec:
              rules:
                - models: [mock-gpt]
                  backends: [{{pool: primary, model: primary-model}}]
                  retry: {retry}
                  {fallbacks}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: alice, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: alice}}}}]}}
        """
        + extra
    }


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hello there"}], "stream": stream, **extra}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    figures.flush("faults")


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(crs(mock_llm.url))


async def error_of(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert isinstance(body["error"]["message"], str)
    return body["error"]  # type: ignore[no-any-return]


async def last_event(response: aiohttp.ClientResponse, guard: float = GUARD) -> bytes:
    async with asyncio.timeout(guard):
        payloads = await read_sse(response)
    return payloads[-1]


async def upstream_closed(mock_llm: MockLLM) -> bool:
    """Whether the gateway closed its upstream request (the mock then records the client as gone)."""
    async with asyncio.timeout(GUARD):
        while True:
            outcomes = [r["outcome"] for r in await mock_llm.requests()]
            if outcomes and outcomes[-1] is not None:
                return outcomes[-1] == "client_disconnected"
            await asyncio.sleep(0.05)


def interrupted(payload: bytes) -> bool:
    return (
        payload.startswith(b"{") and json.loads(payload).get("error", {}).get("code") == "upstream_stream_interrupted"
    )


def survived() -> None:
    figures.add("fault scenarios survived")


# -- upstream faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_an_upstream_reset_before_the_answer_is_a_502_json(
    gateway: GatewayHandle, mock_llm: MockLLM, stream: bool
) -> None:
    await mock_llm.script({"reset_after_chunks": 0}, times=0)
    async with gateway.post(CHAT, chat(stream)) as response:
        assert response.status == 502
        assert (await error_of(response))["code"] == "upstream_reset"
    survived()


async def test_an_upstream_reset_mid_stream_ends_with_the_interruption_event(
    gateway: GatewayHandle, mock_llm: MockLLM
) -> None:
    await mock_llm.script({"reset_after_chunks": 2})
    async with gateway.post(CHAT, chat(True)) as response:
        assert response.status == 200
        assert interrupted(await last_event(response))
    survived()


async def test_an_upstream_silent_before_its_headers_is_a_504_json(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"headers_delay_ms": 8000})  # firstByte is 2s
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 504
        assert (await error_of(response))["code"] == "upstream_timeout"
    survived()


async def test_an_upstream_silent_between_chunks_ends_with_the_interruption_event(
    gateway: GatewayHandle, mock_llm: MockLLM
) -> None:
    await mock_llm.script({"chunks": 4, "chunk_delay_ms": 1500})  # idle is 400ms
    async with gateway.post(CHAT, chat(True)) as response:
        assert interrupted(await last_event(response))
    survived()


async def test_the_idle_timeout_fires_on_a_stream_silent_right_after_its_first_chunk(
    gateway: GatewayHandle, mock_llm: MockLLM
) -> None:
    """Defect 6: headers and one chunk, then nothing: the stream must end (idle 400ms) with the interruption
    event, and the upstream connection must be closed."""
    await mock_llm.script({"stall_after_chunks": 0})
    async with gateway.post(CHAT, chat(True)) as response:
        assert response.status == 200
        assert interrupted(await last_event(response, guard=4.0))  # ten times the idle timeout
    assert await upstream_closed(mock_llm)
    survived()


@pytest.mark.parametrize("body", ["not json at all", '{"id": "chatcmpl-1", "choices": ['], ids=["invalid", "truncated"])
async def test_an_upstream_200_with_a_broken_json_body_is_a_502(
    gateway: GatewayHandle, mock_llm: MockLLM, body: str
) -> None:
    """Defect 7: an upstream 200 whose body is not the JSON it promises is an upstream failure, not an answer."""
    await mock_llm.script({"body": body}, times=0)
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 502
        await error_of(response)
    survived()


async def test_an_upstream_200_with_a_broken_json_body_is_retried_per_retry_on(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    """Defect 7: with the default retryOn, the fallback serves instead."""
    handle = await make_gateway(crs(mock_llm.url, retry="{}", fallback=True))
    await mock_llm.script({"body": '{"id": "chatcmpl-1", "choices": ['}, times=0, model="primary-model")
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 200
        assert response.headers["x-tollway-pool"] == "default/backup"
        assert (await response.json())["choices"][0]["message"]["content"]
    survived()


async def test_a_stream_ending_without_finish_reason_or_done_is_reported_as_cut(
    gateway: GatewayHandle, mock_llm: MockLLM
) -> None:
    """Defect 8: a clean close with neither a finish_reason nor [DONE] is not a complete answer."""
    await mock_llm.script({"end_after_chunks": 2})
    async with gateway.post(CHAT, chat(True)) as response:
        assert response.status == 200
        assert interrupted(await last_event(response))
    survived()


async def test_an_upstream_answer_nested_too_deep_to_translate_is_a_502(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    """Found by this suite, next to defect 7: an Anthropic upstream whose tool_use input nests 300 levels deep
    (valid JSON) crashes the translation back to OpenAI (orjson refuses to re-encode it): a 500, where an
    answer the gateway cannot express must be an upstream failure."""
    handle = await make_gateway(crs(mock_llm.url, provider="anthropic"))
    deep = '{"a":' * 300 + "1" + "}" * 300
    answer = (
        '{"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "stop_reason": "tool_use",'
        ' "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": ' + deep + "}],"
        ' "usage": {"input_tokens": 1, "output_tokens": 1}}'
    )
    await mock_llm.script({"body": answer}, times=0)
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 502
        await error_of(response)
    survived()


# -- Redis ----------------------------------------------------------------------------------------------------


def limited(upstream: str, policy: str) -> dict[str, str]:
    return crs(
        upstream,
        extra=f"""
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {{name: budget, namespace: default}}
            spec:
              key: consumer
              failurePolicy: {policy}
              limits: [{{requests: 3, window: 1h}}]
        """,
    )


async def statuses(handle: GatewayHandle, count: int) -> list[int]:
    async def one() -> int:
        async with handle.post(CHAT, chat()) as response:
            await response.read()
            if response.status >= 400:
                await error_of(response)
            return response.status

    return sorted(await asyncio.gather(*(one() for _ in range(count))))


async def limiting_resumes(handle: GatewayHandle) -> None:
    async with asyncio.timeout(GUARD):
        while True:
            async with handle.post(CHAT, chat()) as response:
                await response.read()
                if "x-ratelimit-remaining-requests" in response.headers or response.status == 429:
                    return
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("policy", ["open", "closed"])
@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_redis_killed_or_frozen_keeps_the_failure_policy(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: RedisServer, policy: str, fault: str
) -> None:
    handle = await make_gateway(limited(mock_llm.url, policy), redis=options_from_url(redis_server.url))
    assert await statuses(handle, 4) == [200, 200, 200, 429]
    process = redis_server.process
    assert process is not None
    if fault == "killed":
        redis_server.stop()
    else:
        process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        assert await statuses(handle, 5) == ([200] * 5 if policy == "open" else [503] * 5)
    finally:
        if fault == "frozen":
            process.send_signal(signal.SIGCONT)
    if fault == "killed":
        redis_server.start()  # empty again: the next requests start a fresh budget
    await limiting_resumes(handle)
    survived()


# -- reloads and shutdown under open streams ------------------------------------------------------------------

STREAMS = 40


async def open_streams(url: str, session: aiohttp.ClientSession, count: int) -> tuple[list[asyncio.Task[bytes]], int]:
    """`count` streams, each started (first event received) before this returns; each task yields its last event."""
    started = asyncio.Semaphore(0)

    async def one() -> bytes:
        body = chat(True, mock={"chunks": 12, "chunk_delay_ms": 60})
        headers = {"Authorization": "Bearer sk-alice"}
        async with session.post(url + CHAT, json=body, headers=headers) as response:
            assert response.status == 200
            first = await response.content.readuntil(b"\n\n")
            started.release()
            async with asyncio.timeout(GUARD * 3):
                rest = await read_sse(response)
            return (rest or [first])[-1]

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    figures.add("streams opened", count)
    for _ in range(count):
        async with asyncio.timeout(GUARD * 3):
            await started.acquire()
    return tasks, count


async def test_a_reload_under_open_streams_breaks_none(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(crs(mock_llm.url))
    tasks, count = await open_streams(handle.url, handle.session, STREAMS)
    files = crs(mock_llm.url)
    files["more.yaml"] = """
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {name: more, namespace: default}
        spec:
          rules: [{models: [other-model], backends: [{pool: backup}]}]
    """
    handle.write(files)
    assert await handle.reload()
    assert [await t for t in tasks] == [b"[DONE]"] * count
    figures.add("streams kept", count)
    survived()


async def test_sigterm_under_open_streams_lets_every_one_finish_then_exits_0(tmp_path: Path, mock_llm: MockLLM) -> None:
    crs_dir = tmp_path / "crs"
    write_crs(crs_dir, crs(mock_llm.url))
    process, url = await spawn_gateway(crs_dir, "--drain-delay", "0.2", "--grace-period", "30")
    try:
        async with aiohttp.ClientSession() as session:
            tasks, count = await open_streams(url, session, STREAMS)
            process.send_signal(signal.SIGTERM)
            assert [await t for t in tasks] == [b"[DONE]"] * count
        async with asyncio.timeout(GUARD * 3):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    figures.add("streams kept", count)
    survived()
