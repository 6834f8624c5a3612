"""The official openai Python SDK, as a real client, against the gateway."""

from __future__ import annotations

import openai
import pytest
from conftest import GatewayHandle


@pytest.fixture
def client(gateway: GatewayHandle) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)


async def test_chat(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_chat_stream_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="mock-gpt",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text and usage is not None and usage.completion_tokens > 0


async def test_embeddings_and_models(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(model="mock-embed", input="hello")
    assert len(result.data[0].embedding) > 0
    models = [m.id async for m in client.models.list()]
    assert "mock-gpt" in models


async def test_errors_surface_as_sdk_exceptions(gateway: GatewayHandle) -> None:
    bad = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await bad.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "invalid_api_key"
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="sk-alice", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="unknown", messages=[{"role": "user", "content": "x"}])
