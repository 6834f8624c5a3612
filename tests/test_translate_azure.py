"""The Azure OpenAI translator: deployment URLs, api-version and the api-key header; bodies stay OpenAI's."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from conftest import GatewayFactory, MockLLM, read_sse
from fixtures.providers.support import make_call, make_pool, provider_crs
from tollway_dataplane.call import CHAT, COMPLETIONS, EMBEDDINGS
from tollway_dataplane.providers import translator_for
from tollway_dataplane.providers.azure import AzureOpenAITranslator

TRANSLATOR = AzureOpenAITranslator()
BASE = "https://contoso.openai.azure.com"


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], **extra}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (CHAT, chat()),
        (COMPLETIONS, {"model": "gpt-4o", "prompt": "x"}),
        (EMBEDDINGS, {"model": "gpt-4o", "input": "x"}),
    ],
)
def test_deployment_url_per_endpoint(endpoint: str, body: dict[str, Any]) -> None:
    pool = make_pool("azure-openai", BASE, azure_api_version="2024-10-21")
    upstream = TRANSLATOR.build_request(make_call(body, endpoint=endpoint), pool, pool.keys[0], "prod-gpt4o")
    assert upstream.url == f"{BASE}/openai/deployments/prod-gpt4o/{endpoint}?api-version=2024-10-21"


def test_api_key_header_and_body() -> None:
    pool = make_pool("azure-openai", f"{BASE}/openai", headers=(("x-ms-useragent", "tollway"),), azure_api_version="v")
    call = make_call(chat())
    upstream = TRANSLATOR.build_request(call, pool, pool.keys[0], "gpt-4o")
    assert upstream.url == f"{BASE}/openai/deployments/gpt-4o/chat/completions?api-version=v"  # /openai not doubled
    assert upstream.headers["api-key"] == "provider-secret" and "Authorization" not in upstream.headers
    assert upstream.headers["x-ms-useragent"] == "tollway"
    assert upstream.body is call.raw  # nothing to rewrite: the caller's bytes go as they are
    renamed = TRANSLATOR.build_request(call, pool, pool.keys[0], "my deployment")
    assert "/deployments/my%20deployment/" in renamed.url and json.loads(renamed.body)["model"] == "my deployment"


def test_stream_asks_for_usage_and_keyless_pool() -> None:
    pool = make_pool("azure-openai", BASE, azure_api_version="2024-10-21")
    upstream = TRANSLATOR.build_request(make_call(chat(stream=True)), pool, None, "gpt-4o")
    assert "api-key" not in upstream.headers and upstream.headers["Accept"] == "text/event-stream"
    assert json.loads(upstream.body)["stream_options"] == {"include_usage": True}


def test_registered() -> None:
    assert isinstance(translator_for("azure-openai"), AzureOpenAITranslator)


async def test_round_trip_stream_and_not(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "azure-openai"))
    async with gateway.post("/v1/chat/completions", chat(model="renamed")) as response:
        assert response.status == 200
        assert (await response.json())["choices"][0]["message"]["content"] == "Hello from the Tollway mock model."
    async with gateway.post("/v1/chat/completions", chat(model="gpt-4o", stream=True)) as response:
        payloads = await read_sse(response)
    assert payloads[-1] == b"[DONE]" and all(b'"usage"' not in p or b'"usage":null' in p for p in payloads)
    async with gateway.post("/v1/embeddings", {"model": "gpt-4o", "input": "hello"}) as response:
        assert response.status == 200 and len((await response.json())["data"]) == 1
    seen = await mock_llm.requests()
    assert [r["path"] for r in seen] == [
        "/openai/deployments/upstream-deployment/chat/completions",
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o/embeddings",
    ]
    assert all(r["query"] == {"api-version": "2024-10-21"} for r in seen)
    assert all(r["headers"]["api-key"] == "provider-secret" and "authorization" not in r["headers"] for r in seen)


async def test_openai_sdk_tool_call(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "azure-openai"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    await mock_llm.script({"tool_call": {"name": "lookup", "arguments": {"q": "tollway"}}})
    tools: list[Any] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    result = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Search"}], tools=tools
    )
    call = result.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert result.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"q": "tollway"}  # type: ignore[union-attr]
