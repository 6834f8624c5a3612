"""Key pools, cooldowns, retries, fallback, timeouts, cancellation and graceful shutdown, against the mock."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, read_sse, spawn_gateway, write_crs

CHAT = "/v1/chat/completions"
ROOT = Path(__file__).resolve().parent.parent


def chat(model: str = "smart", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **extra}


def resilient_crs(
    upstream: str,
    *,
    primary_timeouts: str = "{connect: 1s, firstByte: 5s, idle: 5s}",
    primary_keys: str = "{a: primary-key-a, b: primary-key-b}",
) -> dict[str, str]:
    """A primary pool with two keys and a backup pool; the rule falls back to the backup with its own model."""
    return {
        "pools.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: primary, namespace: default}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              keys: [{{secretRef: {{name: primary-keys}}}}]
              cooldown: {{default: 30s, max: 60s}}
              timeouts: {primary_timeouts}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: primary-keys, namespace: default}}
            stringData: {primary_keys}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: backup, namespace: default}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              keys: [{{secretRef: {{name: backup-keys}}}}]
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: backup-keys, namespace: default}}
            stringData: {{only: backup-key}}
        """,
        "route.yaml": """
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: smart, namespace: default}
            spec:
              rules:
                - models: [smart]
                  backends: [{pool: primary, model: primary-model}]
                  fallbacks: [{pool: backup, model: backup-model}]
                  retry: {attempts: 1}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {name: alice, namespace: default}
            spec: {credentials: [{secretRef: {name: alice-key}}]}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: alice-key, namespace: default}
            stringData: {apiKey: sk-alice}
        """,
    }


@pytest.fixture
async def resilient(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(resilient_crs(mock_llm.url))


async def test_429_benches_the_key_and_the_next_key_serves(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"status": 429, "retry_after": 30}, times=0, api_key="primary-key-a")
    served = []
    for _ in range(4):
        async with resilient.post(CHAT, chat()) as response:
            assert response.status == 200
            served.append((response.headers["x-tollway-pool"], response.headers["x-tollway-attempts"]))
    assert all(pool == "default/primary" for pool, _ in served)
    keys = [r["api_key"] for r in await mock_llm.requests()]
    assert keys.count("primary-key-a") == 1, keys  # benched after its 429, never asked again
    assert keys.count("primary-key-b") == 4


async def test_all_keys_benched_gives_503_with_retry_after(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    files = resilient_crs(mock_llm.url)
    files["route.yaml"] = files["route.yaml"].replace("fallbacks: [{pool: backup, model: backup-model}]", "")
    handle = await make_gateway(files)
    await mock_llm.script({"status": 429, "retry_after": 7}, times=0)
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 503
        assert 1 <= int(response.headers["Retry-After"]) <= 7
        error = (await response.json())["error"]
    assert error["code"] == "upstream_unavailable"
    # Now every key is benched: the pool is skipped without calling the provider at all.
    calls = len(await mock_llm.requests())
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 503 and "Retry-After" in response.headers
    assert len(await mock_llm.requests()) == calls


@pytest.mark.parametrize("stream", [False, True])
async def test_primary_500_falls_back(resilient: GatewayHandle, mock_llm: MockLLM, stream: bool) -> None:
    await mock_llm.script({"status": 500, "error": "model overloaded"}, times=0, model="primary-model")
    async with resilient.post(CHAT, chat(stream=stream)) as response:
        assert response.status == 200
        assert response.headers["x-tollway-pool"] == "default/backup"
        assert response.headers["x-tollway-model"] == "backup-model"
        assert response.headers["x-tollway-attempts"] == "3"  # two primary keys, then the fallback
        if stream:
            payloads = await read_sse(response)
            assert payloads[-1] == b"[DONE]"
        else:
            assert (await response.json())["choices"]
    models = [r["body"]["model"] for r in await mock_llm.requests()]
    assert models == ["primary-model", "primary-model", "backup-model"]


async def test_reset_mid_stream_ends_with_an_error_event(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"chunks": 8, "reset_after_chunks": 3}, model="primary-model")
    async with resilient.post(CHAT, chat(stream=True)) as response:
        assert response.status == 200
        payloads = await read_sse(response)  # ends cleanly: no exception on the client side
    assert payloads[-1] != b"[DONE]"
    error = json.loads(payloads[-1])["error"]
    assert error["code"] == "upstream_stream_interrupted"
    content = [json.loads(p) for p in payloads[:-1]]
    assert sum(1 for c in content if c["choices"] and c["choices"][0]["delta"].get("content")) == 3


async def test_slow_first_byte_times_out_and_falls_back(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(
        resilient_crs(mock_llm.url, primary_timeouts="{firstByte: 500ms}", primary_keys="{a: primary-key-a}")
    )
    await mock_llm.script({"headers_delay_ms": 5000}, times=0, model="primary-model")
    for stream in (False, True):
        async with handle.post(CHAT, chat(stream=stream)) as response:
            assert response.status == 200
            assert response.headers["x-tollway-pool"] == "default/backup"
            await response.read()


async def test_stream_failing_before_first_event_falls_back(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"reset_after_chunks": 0}, times=0, model="primary-model")
    async with resilient.post(CHAT, chat(stream=True)) as response:
        assert response.status == 200
        assert response.headers["x-tollway-pool"] == "default/backup"
        assert (await read_sse(response))[-1] == b"[DONE]"


async def test_caller_errors_are_not_retried(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"status": 400, "error": "bad tool schema"}, times=0)
    async with resilient.post(CHAT, chat()) as response:
        assert response.status == 400
        assert "bad tool schema" in (await response.json())["error"]["message"]
    assert len(await mock_llm.requests()) == 1


async def _wait_for_outcome(mock_llm: MockLLM, outcome: str, limit: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done = [r for r in await mock_llm.requests() if r["outcome"] == outcome]
        if done:
            return done[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no upstream request ended with {outcome}: {await mock_llm.requests()}")


async def test_client_disconnect_closes_the_upstream_stream(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"chunks": 40, "chunk_delay_ms": 250}, model="primary-model")
    response = await resilient.post(CHAT, chat(stream=True))
    assert (await response.content.readline()).startswith(b"data: ")
    closed_at = time.time()
    response.close()
    record = await _wait_for_outcome(mock_llm, "client_disconnected")
    delay = float(record["finished_at"]) - closed_at  # type: ignore[arg-type]
    print(f"\nupstream stream closed {delay * 1000:.0f} ms after the client went away")
    assert int(record["chunks_sent"]) < 40  # type: ignore[call-overload]


async def test_client_disconnect_while_waiting_for_first_byte(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"headers_delay_ms": 4000}, model="primary-model")
    with pytest.raises(asyncio.TimeoutError):
        await resilient.post(CHAT, chat(), timeout=aiohttp.ClientTimeout(total=0.3))
    await _wait_for_outcome(mock_llm, "client_disconnected")


async def test_reload_adds_and_removes_keys(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    files = resilient_crs(mock_llm.url, primary_keys="{b: primary-key-b, c: primary-key-c}")
    resilient.write(files)
    assert await resilient.reload()
    for _ in range(6):
        async with resilient.post(CHAT, chat()) as response:
            assert response.status == 200
    keys = {r["api_key"] for r in await mock_llm.requests()}
    assert keys == {"primary-key-b", "primary-key-c"}


async def test_cooldown_survives_a_reload(resilient: GatewayHandle, mock_llm: MockLLM) -> None:
    await mock_llm.script({"status": 429, "retry_after": 30}, times=1, api_key="primary-key-a")
    await mock_llm.script({"status": 429, "retry_after": 30}, times=1, api_key="primary-key-b")
    async with resilient.post(CHAT, chat()) as response:
        assert response.headers["x-tollway-pool"] == "default/backup"
    resilient.write({"extra.yaml": "# an unrelated edit\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"})
    files = resilient_crs(mock_llm.url)
    files["route.yaml"] = files["route.yaml"].replace("attempts: 1", "attempts: 2")  # a real change
    resilient.write(files)
    assert await resilient.reload()
    await mock_llm.reset()
    async with resilient.post(CHAT, chat()) as response:
        assert response.headers["x-tollway-pool"] == "default/backup"
    assert [r["api_key"] for r in await mock_llm.requests()] == ["backup-key"]


async def test_sigterm_lets_a_stream_finish_then_exits_0(tmp_path: Path, mock_llm: MockLLM) -> None:
    crs = tmp_path / "crs"
    write_crs(crs, resilient_crs(mock_llm.url))
    process, url = await spawn_gateway(crs, "--drain-delay", "0.5", "--grace-period", "20")
    try:
        async with aiohttp.ClientSession() as session:
            await mock_llm.script({"chunks": 10, "chunk_delay_ms": 500})  # a 5-second stream
            headers = {"Authorization": "Bearer sk-alice"}
            async with session.post(f"{url}{CHAT}", json=chat(stream=True), headers=headers) as response:
                assert (await response.content.readline()).startswith(b"data: ")
                process.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                async with session.get(f"{url}/readyz") as ready:
                    assert ready.status == 503  # draining: load balancers stop sending
                payloads = await read_sse(response)
            assert payloads[-1] == b"[DONE]"
            code = await asyncio.wait_for(process.wait(), 30)
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_anthropic_error_before_first_event_falls_back(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    """An Anthropic stream that opens with 200 and then reports `overloaded_error` has sent nothing to the caller:
    the gateway must treat it like a 529 and fall back, not relay an error."""
    from aiohttp import web
    from conftest import start_app

    async def overloaded(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        start = {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 5}}}
        await response.write(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
        error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
        await response.write(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", overloaded)
    runner, port = await start_app(app)
    try:
        files = resilient_crs(mock_llm.url)
        files["pools.yaml"] = files["pools.yaml"].replace(
            f"provider: openai-compatible\n              baseURL: {mock_llm.url}/v1\n              keys: [{{secretRef: {{name: primary-keys}}}}]",
            f"provider: anthropic\n              baseURL: http://127.0.0.1:{port}\n              keys: [{{secretRef: {{name: primary-keys}}}}]",
        )
        assert "provider: anthropic" in files["pools.yaml"]
        handle = await make_gateway(files)
        async with handle.post(CHAT, chat(stream=True)) as response:
            assert response.status == 200
            assert response.headers["x-tollway-pool"] == "default/backup"
            assert (await read_sse(response))[-1] == b"[DONE]"
    finally:
        await runner.cleanup()


async def test_idle_gap_mid_stream_ends_with_an_error_event(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(resilient_crs(mock_llm.url, primary_timeouts="{firstByte: 5s, idle: 300ms}"))
    await mock_llm.script({"chunks": 4, "chunk_delay_ms": 700}, model="primary-model")
    async with handle.post(CHAT, chat(stream=True)) as response:
        assert response.status == 200
        payloads = await read_sse(response)
    error = json.loads(payloads[-1])["error"]
    assert error["code"] == "upstream_stream_interrupted" and "timed out" in error["message"]


async def test_a_stuck_shutdown_step_is_named_and_the_rest_still_close(
    make_gateway: GatewayFactory, mock_llm: MockLLM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A release step that never finishes (a client library stuck on a dead peer) must not keep a stopping pod
    alive: it is logged by name, and the steps after it (the metrics listener here) still run."""
    from tollway_dataplane import server

    handle = await make_gateway(resilient_crs(mock_llm.url))
    running = handle.running
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    monkeypatch.setattr(running.gateway, "stop", stuck)
    monkeypatch.setattr(server, "CLOSE_SECONDS", 0.3)
    metrics_url = f"http://127.0.0.1:{running.metrics_port}/metrics"
    async with handle.session.get(metrics_url) as response:
        assert response.status == 200
    async with asyncio.timeout(5):
        await running.close()
    stuck_steps = [r for r in caplog.records if r.getMessage().startswith("shutdown step did not finish")]
    assert [getattr(r, "step", None) for r in stuck_steps] == ["gateway"]
    with pytest.raises(aiohttp.ClientConnectionError):
        async with handle.session.get(metrics_url):
            pass
