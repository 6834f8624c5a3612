"""The request path through real sockets: gateway -> mock LLM."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, quickstart_crs, read_sse
from tollway_dataplane.metrics import REGISTRY

CHAT = "/v1/chat/completions"


def chat(model: str = "mock-gpt", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello there"}], **extra}


async def error_of(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


async def test_chat_non_stream_reports_route_model_and_request_id(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    async with gateway.post(CHAT, chat(), headers={"x-request-id": "req-123"}) as response:
        assert response.status == 200
        body = await response.json()
        assert response.headers["x-request-id"] == "req-123"
        assert response.headers["x-tollway-route"] == "default/chat"
        assert response.headers["x-tollway-model"] == "mock-gpt"
        assert response.headers["x-tollway-pool"] == "default/mock"
    assert body["choices"][0]["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    [seen] = await mock_llm.requests()
    assert seen["api_key"] in ("upstream-key-a", "upstream-key-b")  # the pool's key, not the caller's
    assert seen["body"]["model"] == "mock-gpt"


async def test_model_rewrite_per_backend(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    async with gateway.post(CHAT, chat("renamed")) as response:
        assert response.status == 200
        assert response.headers["x-tollway-model"] == "upstream-name"
    [seen] = await mock_llm.requests()
    assert seen["body"]["model"] == "upstream-name"


async def test_round_robin_over_the_pool_keys(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    for _ in range(4):
        async with gateway.post(CHAT, chat()) as response:
            assert response.status == 200
    keys = [r["api_key"] for r in await mock_llm.requests()]
    assert sorted(keys) == ["upstream-key-a", "upstream-key-a", "upstream-key-b", "upstream-key-b"]
    assert keys[0] != keys[1]


async def test_stream_is_relayed_chunk_by_chunk(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    # 5 chunks, 300 ms apart: the first must reach the client while the upstream is still generating.
    await mock_llm.script({"chunks": 5, "chunk_delay_ms": 300})
    async with gateway.post(CHAT, chat(stream=True)) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        [in_flight] = await mock_llm.requests()
        assert in_flight["outcome"] is None, "the upstream had already finished: the gateway buffered the stream"
        rest = await read_sse(response)
    assert rest[-1] == b"[DONE]"
    chunks = [json.loads(first[5:])] + [json.loads(p) for p in rest[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 5
    # The caller did not ask for usage: the gateway asked the provider for it and hid the extra chunk.
    assert all(c["choices"] for c in chunks)
    [seen] = await mock_llm.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}


async def test_stream_usage_chunk_kept_when_caller_asks(gateway: GatewayHandle) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    async with gateway.post(CHAT, body) as response:
        payloads = await read_sse(response)
    usage_chunks = [json.loads(p) for p in payloads[:-1] if json.loads(p).get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []


async def test_completions_and_embeddings(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    async with gateway.post("/v1/completions", {"model": "mock-gpt", "prompt": "Say hi"}) as response:
        assert response.status == 200
        assert (await response.json())["object"] == "text_completion"
    async with gateway.post("/v1/embeddings", {"model": "mock-embed", "input": ["a", "b"]}) as response:
        assert response.status == 200
        body = await response.json()
    assert len(body["data"]) == 2 and body["usage"]["prompt_tokens"] > 0


@pytest.mark.parametrize(
    ("key", "headers", "model", "status", "code"),
    [
        (None, {}, "mock-gpt", 401, "missing_api_key"),
        ("sk-nobody", {}, "mock-gpt", 401, "invalid_api_key"),
        (None, {"x-api-key": "sk-alice"}, "mock-gpt", 200, None),
        (None, {"api-key": "sk-alice"}, "mock-gpt", 200, None),
        (None, {"x-goog-api-key": "sk-alice"}, "mock-gpt", 200, None),
        ("sk-bob", {}, "premium", 403, "model_not_allowed"),  # the route selects tier=gold only
        ("sk-alice", {}, "premium", 200, None),
        ("sk-carol", {}, "mock-gpt", 403, "source_not_allowed"),  # carol may only call from 10.99.0.0/16
        ("sk-alice", {}, "no-such-model", 404, "model_not_found"),
    ],
)
async def test_auth_matrix(
    gateway: GatewayHandle, key: str | None, headers: dict[str, str], model: str, status: int, code: str | None
) -> None:
    async with gateway.post(CHAT, chat(model), key=key, headers=headers) as response:
        assert response.status == status
        if code:
            assert (await error_of(response))["code"] == code
            assert response.headers["x-request-id"]


async def test_models_lists_only_what_the_consumer_may_use(gateway: GatewayHandle) -> None:
    async with gateway.get("/v1/models", key="sk-alice") as response:
        alice = {m["id"] for m in (await response.json())["data"]}
    async with gateway.get("/v1/models", key="sk-bob") as response:
        bob = {m["id"] for m in (await response.json())["data"]}
    assert alice == {"mock-gpt", "mock-*", "renamed", "premium"}
    assert bob == {"mock-gpt", "mock-*", "renamed"}
    async with gateway.get("/v1/models/premium", key="sk-bob") as response:
        assert response.status == 404
    async with gateway.get("/v1/models", key=None) as response:
        assert response.status == 401


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "empty"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "'model' is required"),
        (json.dumps({"model": 42, "messages": []}).encode(), "'model' must be a non-empty string"),
        (json.dumps({"model": "mock-gpt", "messages": "hi"}).encode(), "'messages' must be a non-empty array"),
        (json.dumps({**chat(), "stream": "yes"}).encode(), "'stream' must be a boolean"),
        (json.dumps({**chat(), "max_tokens": "10"}).encode(), "'max_tokens' must be an integer"),
    ],
)
async def test_bad_requests_get_400_naming_the_problem(gateway: GatewayHandle, body: bytes, fragment: str) -> None:
    async with gateway.post(CHAT, body, headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert fragment in str((await error_of(response))["message"])


async def test_body_limit_413(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    files = quickstart_crs(mock_llm.url)
    handle = await make_gateway(files)
    big = json.dumps(chat(padding="x" * (11 * 1024 * 1024)))
    async with handle.post(CHAT, big) as response:
        assert response.status == 413
        assert (await error_of(response))["code"] == "request_too_large"
    # The limit is configurable (tollway run --max-body-bytes).
    small = await make_gateway(files, max_body_bytes=4096)
    async with small.post(CHAT, json.dumps(chat(padding="x" * 5000))) as response:
        assert response.status == 413
    async with small.post(CHAT, chat()) as response:
        assert response.status == 200


async def test_unknown_path_and_wrong_method(gateway: GatewayHandle) -> None:
    async with gateway.get("/v2/whatever") as response:
        assert response.status == 404
        await error_of(response)
    async with gateway.get(CHAT) as response:
        assert response.status == 405
        await error_of(response)


async def test_upstream_errors(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    # The provider refuses the caller's request: its status and message are passed on.
    await mock_llm.script({"status": 400, "error": "max_tokens is too large for this model"})
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 400
        assert "max_tokens is too large" in str((await error_of(response))["message"])


async def test_upstream_down_gives_502(make_gateway: GatewayFactory) -> None:
    handle = await make_gateway(quickstart_crs("http://127.0.0.1:9"))  # nothing listens on the discard port
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 502
        assert (await error_of(response))["code"] == "upstream_connect_error"


async def test_health_and_readiness(gateway: GatewayHandle) -> None:
    async with gateway.get("/healthz", key=None) as response:
        assert response.status == 200
    async with gateway.get("/readyz", key=None) as response:
        body = await response.json()
    assert response.status == 200 and body["configHash"].startswith("sha256:")


async def test_not_ready_without_config(make_gateway: GatewayFactory) -> None:
    handle = await make_gateway({"broken.yaml": "kind: [unterminated"})
    async with handle.get("/readyz", key=None) as response:
        assert response.status == 503
    async with handle.post(CHAT, chat()) as response:
        assert response.status == 503
        assert (await error_of(response))["code"] == "not_ready"


async def test_reload_during_stream(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    """A stream in flight finishes on its snapshot; the next request sees the new config."""
    await mock_llm.script({"chunks": 6, "chunk_delay_ms": 150})
    async with gateway.post(CHAT, chat(stream=True)) as response:
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        # Remove every model the stream could be using and take bob's key away.
        files = quickstart_crs(mock_llm.url)
        files["routes.yaml"] = files["routes.yaml"].replace('[mock-gpt, "mock-*"]', "[other-model]")
        files["consumers.yaml"] = files["consumers.yaml"].replace("apiKey: sk-bob", "apiKey: sk-bob-rotated")
        gateway.write(files)
        assert await gateway.reload()
        rest = await read_sse(response)
    assert rest[-1] == b"[DONE]"
    text = "".join(json.loads(p)["choices"][0]["delta"].get("content") or "" for p in [first[5:].strip(), *rest[:-1]])
    assert len(text.split()) == 6
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 404
    async with gateway.post(CHAT, chat("other-model"), key="sk-bob") as response:
        assert response.status == 401
    async with gateway.post(CHAT, chat("other-model"), key="sk-bob-rotated") as response:
        assert response.status == 200


async def test_invalid_change_keeps_the_last_good_config(gateway: GatewayHandle) -> None:
    failures = REGISTRY.get_sample_value("tollway_config_reload_failures_total") or 0
    before = gateway.running.gateway.snapshot
    assert before is not None
    gateway.write({"broken.yaml": "apiVersion: tollway.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: x\n"})
    assert not await gateway.reload()
    assert gateway.running.gateway.snapshot is before
    assert REGISTRY.get_sample_value("tollway_config_reload_failures_total") == failures + 1
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 200


async def test_file_watcher_picks_up_changes(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(quickstart_crs(mock_llm.url), reload_interval=0.1)
    files = quickstart_crs(mock_llm.url)
    files["routes.yaml"] = files["routes.yaml"].replace("[renamed]", "[renamed, brand-new]")
    handle.write(files)
    deadline = time.monotonic() + 10
    status = 0
    while time.monotonic() < deadline:
        async with handle.post(CHAT, chat("brand-new")) as response:
            status = response.status
        if status == 200:
            break
        await asyncio.sleep(0.1)
    assert status == 200


async def test_upstream_answers_are_asked_for_uncompressed(gateway: GatewayHandle, mock_llm: MockLLM) -> None:
    # Answers are relayed and parsed as they arrive: a gzipped body would reach a translator as bytes it cannot read.
    async with gateway.post(CHAT, chat()) as response:
        assert response.status == 200
    (request,) = await mock_llm.requests()
    assert request["headers"]["accept-encoding"] == "identity"


@pytest.mark.parametrize("stages", [False, True])
async def test_an_http_1_0_caller_gets_a_stream_it_can_read(
    make_gateway: GatewayFactory, mock_llm: MockLLM, stages: bool
) -> None:
    """HTTP/1.0 has no chunked framing: the stream is the events themselves, ended by closing the connection."""
    crs = quickstart_crs(mock_llm.url)
    if stages:  # a response filter on the route: the events go through the chain, then out
        crs["routes.yaml"] = crs["routes.yaml"].replace(
            "              rules:\n",
            "              guardrails: {checkers: [{name: pii, type: rules, detectors: [email]}]}\n              rules:\n",
            1,
        )
    gateway = await make_gateway(crs)
    await mock_llm.script({"chunks": 3, "chunk_delay_ms": 50})  # events after the first come one by one
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.running.port)
    body = json.dumps(chat(stream=True)).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer sk-alice\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    raw = await asyncio.wait_for(reader.read(-1), 10)  # to the end: the gateway closes the connection
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    events = [e for e in payload.split(b"\n\n") if e]
    assert all(e.startswith(b"data: ") for e in events), payload[:200]
    assert events[-1] == b"data: [DONE]"
