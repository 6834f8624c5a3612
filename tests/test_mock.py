"""The mock LLM server, exercised over real sockets the way the gateway and the OpenAI SDK use it."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from openai import AsyncOpenAI
from tollway_mock import create_app
from tollway_mock.content import DEFAULT_TEXT

pytestmark = pytest.mark.asyncio

DEFAULT_PIECES = ["Hello", " from", " the", " Tollway", " mock", " model."]
CHAT = "/v1/chat/completions"


@asynccontextmanager
async def running_mock(require_keys: Collection[str] | None = None) -> AsyncIterator[str]:
    # A plain AppRunner, like the gateway's tests, proves disconnect handling does not depend on the runner.
    runner = web.AppRunner(create_app(require_keys=require_keys))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def base_url() -> AsyncIterator[str]:
    async with running_mock() as url:
        yield url


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": "Say hello"}], **extra}


async def sse_events(response: aiohttp.ClientResponse) -> list[Any]:
    """The decoded `data:` payloads of a stream, with "[DONE]" kept as a string."""
    events: list[Any] = []
    async for line in response.content:
        if line.startswith(b"data: "):
            data = line[len(b"data: ") :].strip()
            events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


async def requests_log(http: aiohttp.ClientSession, base_url: str) -> list[dict[str, Any]]:
    async with http.get(f"{base_url}/__mock/requests") as response:
        return await response.json()  # type: ignore[no-any-return]


# --- chat completions -------------------------------------------------------------------------------------


async def test_chat_non_stream_reports_consistent_usage(base_url: str, http: aiohttp.ClientSession) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},  # 9 characters
        {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},  # 11 characters
    ]
    async with http.post(f"{base_url}{CHAT}", json={"model": "any-model", "messages": messages}) as response:
        assert response.status == 200
        body = await response.json()

    assert body["object"] == "chat.completion"
    assert body["model"] == "any-model"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": math.ceil(20 / 4),
        "completion_tokens": len(DEFAULT_PIECES),
        "total_tokens": 5 + len(DEFAULT_PIECES),
    }


async def test_chat_stream_without_usage(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await sse_events(response)

    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" and "usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-1]]
    assert pieces == DEFAULT_PIECES
    assert "".join(pieces) == DEFAULT_TEXT
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_chat_stream_with_include_usage(base_url: str, http: aiohttp.ClientSession) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True}, mock={"chunks": 9})
    async with http.post(f"{base_url}{CHAT}", json=body) as response:
        events = await sse_events(response)

    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    content_chunks = [e for e in events[1:-3] if e["choices"][0]["delta"].get("content")]
    assert len(content_chunks) == 9
    # Like OpenAI, every other chunk carries an explicit null usage once usage was asked for.
    assert all(e["usage"] is None for e in events[:-2])


async def test_scripted_content_chunks_and_usage_override(base_url: str, http: aiohttp.ClientSession) -> None:
    mock = {"content": "one two three", "chunks": 5, "usage": {"prompt_tokens": 100}}
    async with http.post(f"{base_url}{CHAT}", json=chat_body(mock=mock)) as response:
        body = await response.json()
    assert body["choices"][0]["message"]["content"] == "one two three one two"
    assert body["usage"] == {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}

    omit = {"stream": True, "stream_options": {"include_usage": True}, "mock": {"omit_usage": True}}
    async with http.post(f"{base_url}{CHAT}", json=chat_body(**omit)) as response:
        events = await sse_events(response)
    assert all("usage" not in e for e in events[:-1])
    async with http.post(f"{base_url}{CHAT}", json=chat_body(mock={"omit_usage": True})) as response:
        assert "usage" not in await response.json()


async def test_max_tokens_truncates_with_length_finish(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(max_tokens=2)) as response:
        body = await response.json()
    assert body["choices"][0]["message"]["content"] == "Hello from"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2

    body = chat_body(max_completion_tokens=3, stream=True, stream_options={"include_usage": True})
    async with http.post(f"{base_url}{CHAT}", json=body) as response:
        events = await sse_events(response)
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 3


# --- other endpoints ------------------------------------------------------------------------------------------


async def test_completions_non_stream_and_stream(base_url: str, http: aiohttp.ClientSession) -> None:
    body: dict[str, Any] = {"model": "mock-gpt", "prompt": "Once upon a time"}
    async with http.post(f"{base_url}/v1/completions", json=body) as response:
        result = await response.json()
    assert result["object"] == "text_completion"
    assert result["choices"][0]["text"] == DEFAULT_TEXT
    assert result["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}

    body.update(stream=True, stream_options={"include_usage": True})
    async with http.post(f"{base_url}/v1/completions", json=body) as response:
        events = await sse_events(response)
    texts = [e["choices"][0]["text"] for e in events[:-3]]
    assert texts == DEFAULT_PIECES
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] == len(DEFAULT_PIECES)
    assert events[-1] == "[DONE]"


async def test_embeddings_are_deterministic(base_url: str, http: aiohttp.ClientSession) -> None:
    body: dict[str, Any] = {"model": "mock-embedding", "input": ["alpha", "beta", "alpha"]}
    async with http.post(f"{base_url}/v1/embeddings", json=body) as response:
        result = await response.json()
    vectors = [item["embedding"] for item in result["data"]]
    assert [item["index"] for item in result["data"]] == [0, 1, 2]
    assert len(vectors[0]) == 8
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0)
    assert result["usage"] == {"prompt_tokens": 2 + 1 + 2, "total_tokens": 5}  # ceil(chars / 4) per input

    body = {"model": "mock-embedding", "input": [[1, 2, 3], [4]], "dimensions": 3}
    async with http.post(f"{base_url}/v1/embeddings", json=body) as response:
        result = await response.json()
    assert [len(item["embedding"]) for item in result["data"]] == [3, 3]
    assert result["usage"]["prompt_tokens"] == 4


async def test_models_list(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/v1/models") as response:
        result = await response.json()
    assert result["object"] == "list"
    assert "mock-gpt" in [model["id"] for model in result["data"]]


async def test_any_path_prefix_routes_by_suffix(base_url: str, http: aiohttp.ClientSession) -> None:
    url = f"{base_url}/openai/deployments/gpt/chat/completions?api-version=2024-06-01"
    async with http.post(url, json=chat_body()) as response:
        assert (await response.json())["object"] == "chat.completion"
    log = await requests_log(http, base_url)
    assert log[-1]["path"] == "/openai/deployments/gpt/chat/completions"
    assert log[-1]["query"] == {"api-version": "2024-06-01"}


async def test_invalid_requests_get_openai_errors(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base_url}{CHAT}", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_json"

    async with http.post(f"{base_url}{CHAT}", json={"messages": []}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "missing_model"

    async with http.post(f"{base_url}{CHAT}", json=chat_body(mock={"statuss": 500})) as response:
        assert response.status == 400
        assert "statuss" in (await response.json())["error"]["message"]


# --- scripting --------------------------------------------------------------------------------------------


async def test_scripted_status_retry_after_and_error(base_url: str, http: aiohttp.ClientSession) -> None:
    header = orjson.dumps({"status": 429, "retry_after": 7, "error": "slow down", "headers": {"x-extra": "1"}})
    async with http.post(f"{base_url}{CHAT}", json=chat_body(), headers={"x-mock": header.decode()}) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "7"
        assert response.headers["x-extra"] == "1"
        error = (await response.json())["error"]
    assert error["message"] == "slow down"
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"

    verbatim = {"error": {"message": "overloaded", "type": "overloaded_error"}}
    async with http.post(f"{base_url}{CHAT}", json=chat_body(mock={"status": 529, "error": verbatim})) as response:
        assert response.status == 529
        assert await response.json() == verbatim

    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock={"status": 503})) as response:
        assert response.status == 503
        assert (await response.json())["error"]["type"] == "server_error"

    outcomes = [entry["outcome"] for entry in await requests_log(http, base_url)]
    assert outcomes == ["error", "error", "error"]


async def test_headers_delay_and_chunk_delay_pace_the_stream(base_url: str, http: aiohttp.ClientSession) -> None:
    mock = {"headers_delay_ms": 100, "chunk_delay_ms": 40, "chunks": 5}
    started = time.monotonic()
    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock=mock)) as response:
        headers_at = time.monotonic()
        arrivals = []
        async for line in response.content:
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())
    finished = time.monotonic()

    # Only lower bounds and ordering: events arrive one by one, not as one buffered body.
    assert headers_at - started >= 0.09
    assert len(arrivals) == 1 + 5 + 1 + 1  # role, content, finish, [DONE]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] < arrivals[-1]
    assert arrivals[-1] - arrivals[0] >= 0.03 * (len(arrivals) - 1)
    assert arrivals[-1] <= finished


async def test_reset_after_chunks_breaks_the_stream(base_url: str, http: aiohttp.ClientSession) -> None:
    received: list[str] = []
    with pytest.raises((aiohttp.ClientError, ConnectionResetError)):
        async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock={"reset_after_chunks": 2})) as r:
            async for line in r.content:
                if line.startswith(b"data: {"):
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    received.append(delta.get("content", ""))
    assert "".join(received) == "Hello from"

    with pytest.raises(aiohttp.ClientError):
        async with http.post(f"{base_url}{CHAT}", json=chat_body(mock={"reset_after_chunks": 0})) as response:
            await response.read()

    log = await requests_log(http, base_url)
    assert [(entry["outcome"], entry["chunks_sent"]) for entry in log] == [("reset", 2), ("reset", 0)]


async def test_end_after_chunks_ends_the_stream_cleanly_without_its_trailer(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock={"end_after_chunks": 2})) as response:
        events = await sse_events(response)
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""},
        *[{"content": piece} for piece in DEFAULT_PIECES[:2]],
    ]
    assert all(e["choices"][0]["finish_reason"] is None for e in events)  # no finish chunk, no [DONE]
    log = await requests_log(http, base_url)
    assert [(entry["outcome"], entry["chunks_sent"]) for entry in log] == [("ended_early", 2)]


async def test_stall_after_chunks_goes_silent_until_the_client_leaves(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock={"stall_after_chunks": 1})) as response:
        first = await response.content.readuntil(b"\n\n")  # the role chunk
        second = await response.content.readuntil(b"\n\n")  # the one content chunk
        assert b'"role"' in first and DEFAULT_PIECES[0].encode() in second
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.content.readany(), 0.2)  # nothing more, and no end either
    for _ in range(100):  # the disconnect reaches the mock's handler asynchronously
        log = await requests_log(http, base_url)
        if log[0]["outcome"] is not None:
            break
        await asyncio.sleep(0.02)
    assert [(entry["outcome"], entry["chunks_sent"]) for entry in log] == [("client_disconnected", 1)]


async def test_a_scripted_body_replaces_the_answer_verbatim(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(mock={"body": '{"id": "x", "choices": ['})) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == b'{"id": "x", "choices": ['


async def test_echo_returns_the_received_request(base_url: str, http: aiohttp.ClientSession) -> None:
    body = chat_body(mock={"echo": True})
    headers = {"X-Custom": "yes", "Authorization": "Bearer sk-echo"}
    async with http.post(f"{base_url}/v1{CHAT[3:]}?trace=1", json=body, headers=headers) as response:
        echoed = orjson.loads((await response.json())["choices"][0]["message"]["content"])
    assert echoed["method"] == "POST"
    assert echoed["path"] == CHAT
    assert echoed["query"] == {"trace": "1"}
    assert echoed["headers"]["x-custom"] == "yes"
    assert echoed["headers"]["authorization"] == "Bearer sk-echo"
    assert echoed["body"] == body


async def test_queued_rules_match_and_count_down(base_url: str, http: aiohttp.ClientSession) -> None:
    rule = {"match": {"api_key": "sk-flaky"}, "times": 2, "behaviour": {"status": 500}}
    async with http.post(f"{base_url}/__mock/script", json=rule) as response:
        assert response.status == 201
    forever = {"match": {"model": "slow-model"}, "times": 0, "behaviour": {"content": "always"}}
    async with http.post(f"{base_url}/__mock/script", json=forever) as response:
        assert response.status == 201

    async def status_for(key: str, model: str = "mock-gpt", **extra: Any) -> int:
        body = {"model": model, "messages": [], **extra}
        headers = {"Authorization": f"Bearer {key}"}
        async with http.post(f"{base_url}{CHAT}", json=body, headers=headers) as response:
            return response.status

    assert await status_for("sk-other") == 200
    # A request carrying its own script does not consume a matching rule.
    assert await status_for("sk-flaky", mock={"content": "mine"}) == 200
    assert [await status_for("sk-flaky") for _ in range(3)] == [500, 500, 200]

    for _ in range(3):
        async with http.post(f"{base_url}{CHAT}", json=chat_body(model="slow-model")) as response:
            assert (await response.json())["choices"][0]["message"]["content"] == "always"

    async with http.delete(f"{base_url}/__mock/script") as response:
        assert (await response.json())["cleared"] == 1
    async with http.post(f"{base_url}{CHAT}", json=chat_body(model="slow-model")) as response:
        assert (await response.json())["choices"][0]["message"]["content"] == DEFAULT_TEXT

    async with http.post(f"{base_url}/__mock/script", json={"behaviour": {"nope": 1}}) as response:
        assert response.status == 400


async def test_request_log_records_client_disconnect(base_url: str, http: aiohttp.ClientSession) -> None:
    mock = {"chunk_delay_ms": 30, "chunks": 200}
    async with http.post(f"{base_url}{CHAT}", json=chat_body(stream=True, mock=mock)) as response:
        async for line in response.content:
            if b'"content":"Hello"' in line:
                break
        response.close()  # drop the connection mid-stream, as a gateway cancelling its upstream does
    closed_at = time.time()

    entry: dict[str, Any] = {}
    for _ in range(200):
        entry = (await requests_log(http, base_url))[0]
        if entry["outcome"] is not None:
            break
        await asyncio.sleep(0.01)
    assert entry["outcome"] == "client_disconnected"
    assert 1 <= entry["chunks_sent"] < 200
    assert entry["received_at"] <= entry["finished_at"]
    assert entry["finished_at"] >= closed_at - 0.1
    # Control calls are not logged.
    assert len(await requests_log(http, base_url)) == 1


async def test_request_log_contents_and_clear(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{base_url}{CHAT}", json=chat_body(), headers={"api-key": "sk-azure"}) as response:
        await response.read()
    (entry,) = await requests_log(http, base_url)
    assert entry["method"] == "POST"
    assert entry["api_key"] == "sk-azure"
    assert entry["headers"]["api-key"] == "sk-azure"
    assert entry["body"] == chat_body()
    assert entry["outcome"] == "completed"
    assert entry["received_at"] <= entry["finished_at"]

    async with http.delete(f"{base_url}/__mock/requests") as response:
        assert (await response.json())["cleared"] == 1
    assert await requests_log(http, base_url) == []


async def test_require_keys(http: aiohttp.ClientSession) -> None:
    async with running_mock(require_keys={"sk-good"}) as url:

        async def status(headers: dict[str, str]) -> int:
            async with http.post(f"{url}{CHAT}", json=chat_body(), headers=headers) as response:
                if response.status == 401:
                    assert (await response.json())["error"]["code"] == "invalid_api_key"
                return response.status

        assert await status({}) == 401
        assert await status({"Authorization": "Bearer sk-bad"}) == 401
        assert await status({"Authorization": "Bearer sk-good"}) == 200
        assert await status({"api-key": "sk-good"}) == 200
        assert await status({"x-api-key": "sk-good"}) == 200
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200


async def test_many_concurrent_streams(base_url: str) -> None:
    async def one(session: aiohttp.ClientSession) -> str:
        body = chat_body(stream=True, mock={"chunk_delay_ms": 10, "chunks": 6})
        async with session.post(f"{base_url}{CHAT}", json=body) as response:
            events = await sse_events(response)
        return "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])

    # No connection limit on the client, so all streams really are open at once.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(*(one(session) for _ in range(300)))
    assert set(results) == {DEFAULT_TEXT}
    log = await _log(base_url)
    assert len(log) == 300
    assert {entry["outcome"] for entry in log} == {"completed"}


# --- the official OpenAI SDK ------------------------------------------------------------------------------


async def test_openai_sdk(base_url: str) -> None:
    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="sk-sdk", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "Hi"}]
        )
        assert completion.choices[0].message.content == DEFAULT_TEXT
        assert completion.usage is not None and completion.usage.completion_tokens == len(DEFAULT_PIECES)

        stream = await client.chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        assert text == DEFAULT_TEXT
        assert usage is not None and usage.total_tokens == 1 + len(DEFAULT_PIECES)

        # The SDK asks for base64 by default and decodes it itself.
        embedded = await client.embeddings.create(model="mock-embedding", input=["a", "b"], dimensions=4)
        assert [len(item.embedding) for item in embedded.data] == [4, 4]
        float_vectors = await client.embeddings.create(
            model="mock-embedding", input=["a", "b"], dimensions=4, encoding_format="float"
        )
        for decoded, plain in zip(embedded.data, float_vectors.data, strict=True):
            assert all(
                math.isclose(x, y, rel_tol=1e-6) for x, y in zip(decoded.embedding, plain.embedding, strict=True)
            )

        models = [model.id async for model in client.models.list()]
        assert "mock-gpt" in models
    finally:
        await client.close()

    log_keys = {entry["api_key"] for entry in await _log(base_url)}
    assert log_keys == {"sk-sdk"}


async def _log(base_url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return await requests_log(session, base_url)
