"""`/v1/responses` over HTTP: the official openai SDK against OpenAI-compatible, Anthropic and Gemini pools of
the mock (translated) and against the mock speaking the Responses API (native pass-through), conversations,
retrieval and deletion, fallback across protocols, limits and the prompt decorator on this entry, errors."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import openai
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, quickstart_crs
from fixtures.openresponses.schema import assert_events, assert_response
from fixtures.providers.support import CONSUMER, access_record, attempt_outcomes, capture_access, provider_crs
from test_cache import cached_crs
from tollway_dataplane import metrics

RESPONSES = "/v1/responses"
TRANSLATED = ["openai-compatible", "anthropic", "gemini"]
NATIVE = ["openai", "azure-openai"]
WEATHER: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def sdk(gateway: GatewayHandle, key: str = "sk-alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def events_of(raw: bytes) -> list[dict[str, Any]]:
    """The `data:` payloads of a Responses stream, in order."""
    out = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


def upstream_text(record: dict[str, Any]) -> str:
    """Everything the provider was sent, as one searchable string."""
    return json.dumps(record["body"])


@pytest.fixture(params=TRANSLATED + NATIVE)
async def served(request: pytest.FixtureRequest, make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    """A gateway whose one pool on the mock speaks the given provider's protocol."""
    return await make_gateway(provider_crs(mock_llm.url, request.param))


def provider_of(gateway: GatewayHandle) -> str:
    snapshot = gateway.running.gateway.snapshot
    assert snapshot is not None
    return snapshot.config.pools[0].provider


# -- the SDK on every kind of pool ---------------------------------------------------------------------------


async def test_create(served: GatewayHandle, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture) -> None:
    capture_access(caplog)
    usage = {"prompt_tokens": 12, "completion_tokens": 4}
    await mock_llm.script({"content": "Bonjour tout le monde", "usage": usage})
    result = await sdk(served).responses.create(model="mock-gpt", instructions="Speak French.", input="Hello")
    assert result.object == "response" and result.status == "completed"
    assert result.output_text == "Bonjour tout le monde"
    assert result.usage is not None and (result.usage.input_tokens, result.usage.output_tokens) == (12, 4)
    record = (await access_record(caplog, RESPONSES))["ai_log"]
    assert (record["input_tokens"], record["output_tokens"], record["usage_estimated"]) == (12, 4, False)
    # The raw object, as any client reads it, follows the specification.
    async with served.post(RESPONSES, {"model": "mock-gpt", "input": "Hello"}) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/up"
        assert_response(await response.json())
    sent = (await mock_llm.requests())[0]
    if provider_of(served) in NATIVE:
        assert sent["path"].endswith("/responses") and sent["body"]["instructions"] == "Speak French."
    else:
        assert "Speak French." in upstream_text(sent) and not sent["path"].endswith("/responses")


async def test_stream(served: GatewayHandle, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture) -> None:
    capture_access(caplog)
    await mock_llm.script({"content": "one two three four", "usage": {"prompt_tokens": 21, "completion_tokens": 4}})
    async with sdk(served).responses.stream(model="mock-gpt", input="Count") as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == "one two three four" == final.output_text
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (21, 4)
    record = (await access_record(caplog, RESPONSES))["ai_log"]
    assert (record["input_tokens"], record["output_tokens"], record["stream"]) == (21, 4, True)
    async with served.post(RESPONSES, {"model": "mock-gpt", "input": "Count", "stream": True}) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = events_of(await response.read())
    assert_events(events)
    assert [e["type"] for e in events][:2] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"


async def test_create_with_stream_true(served: GatewayHandle) -> None:
    stream = await sdk(served).responses.create(model="mock-gpt", input="Hi", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds


@pytest.mark.parametrize("stream", [False, True])
async def test_function_call_round_trip(served: GatewayHandle, mock_llm: MockLLM, stream: bool) -> None:
    client = sdk(served)
    await mock_llm.script({"tool_call": {"name": "get_weather", "arguments": {"city": "Lima"}}})
    if stream:
        async with client.responses.stream(model="mock-gpt", input="Weather in Lima?", tools=WEATHER) as events:
            first = await events.get_final_response()
    else:
        first = await client.responses.create(model="mock-gpt", input="Weather in Lima?", tools=WEATHER)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and json.loads(calls[0].arguments) == {"city": "Lima"}
    # The usual follow-up: the tool's result on top of the previous response.
    second = await client.responses.create(
        model="mock-gpt",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "19C, clear"}],
        tools=WEATHER,
    )
    assert second.status == "completed" and second.output_text
    sent = upstream_text((await mock_llm.requests())[-1])
    assert "19C, clear" in sent and "get_weather" in sent and "Weather in Lima?" in sent


async def test_three_turns_retrieve_and_delete(served: GatewayHandle, mock_llm: MockLLM) -> None:
    client = sdk(served)
    turns = [("My name is Ada.", "Hello Ada."), ("I like tea.", "Noted: tea."), ("What do I like?", "Tea, Ada.")]
    previous: str | None = None
    ids = []
    for question, answer in turns:
        await mock_llm.script({"content": answer})
        extra = {"previous_response_id": previous} if previous else {}
        result = await client.responses.create(model="mock-gpt", input=question, **extra)
        assert result.output_text == answer
        ids.append(previous := result.id)
    # The third call carried the whole conversation, whatever the pool, and no id the provider never issued.
    last = (await mock_llm.requests())[-1]
    sent = upstream_text(last)
    assert all(text in sent for pair in turns for text in pair[:1]) and "Hello Ada." in sent and "Noted: tea." in sent
    assert "previous_response_id" not in last["body"]
    retrieved = await client.responses.retrieve(ids[2])
    assert retrieved.id == ids[2] and retrieved.output_text == "Tea, Ada."
    async with served.get(f"{RESPONSES}/{ids[2]}") as response:
        assert_response(await response.json())
    await client.responses.delete(ids[0])
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(ids[0])
    with pytest.raises(openai.NotFoundError):
        await client.responses.delete(ids[0])
    # Later responses keep their own history: the conversation goes on without the deleted first turn.
    await mock_llm.script({"content": "Still tea."})
    fourth = await client.responses.create(model="mock-gpt", input="And now?", previous_response_id=ids[2])
    assert fourth.output_text == "Still tea." and "My name is Ada." in upstream_text((await mock_llm.requests())[-1])


async def test_store_false_keeps_nothing(served: GatewayHandle) -> None:
    client = sdk(served)
    result = await client.responses.create(model="mock-gpt", input="Hi", store=False)
    assert result.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(result.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="mock-gpt", input="Again", previous_response_id=result.id)


# -- conversations are the consumer's own ----------------------------------------------------------------------


async def test_another_consumers_response_is_not_found(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(quickstart_crs(mock_llm.url))
    alice, bob = sdk(gateway), sdk(gateway, "sk-bob")
    mine = await alice.responses.create(model="mock-gpt", input="secret plans")
    with pytest.raises(openai.NotFoundError) as info:
        await bob.responses.retrieve(mine.id)
    assert info.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError) as info:
        await bob.responses.create(model="mock-gpt", input="tell me", previous_response_id=mine.id)
    assert info.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        await bob.responses.delete(mine.id)
    assert (await alice.responses.retrieve(mine.id)).id == mine.id
    async with gateway.get(f"{RESPONSES}/{mine.id}", key=None) as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "missing_api_key"


# -- native pass-through -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", NATIVE)
async def test_native_pools_get_the_callers_body(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str
) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    body = {
        "model": "renamed",  # the rule rewrites it to upstream-deployment
        "input": [{"type": "message", "role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        "tools": [*WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "ns", "tools": WEATHER}],
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "client_metadata": {"session_id": "s"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "a_field_from_the_future": [1, 2],
    }
    async with gateway.post(RESPONSES, body) as response:
        assert response.status == 200
        assert response.headers["x-tollway-model"] == "upstream-deployment"
    (sent,) = await mock_llm.requests()
    assert sent["body"] == {**body, "model": "upstream-deployment"}
    assert sent["api_key"] == "provider-secret"  # the pool's key, never the caller's
    expected = "/v1/responses" if provider == "openai" else "/openai/v1/responses"
    assert sent["path"] == expected


async def test_native_stream_is_relayed_as_it_comes(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, "openai"))
    await mock_llm.script(
        {"content": "a b c", "usage": {"prompt_tokens": 5, "completion_tokens": 3, "reasoning_tokens": 2}}
    )
    async with gateway.post(RESPONSES, {"model": "mock-gpt", "input": "x", "stream": True}) as response:
        raw = await response.read()
    events = events_of(raw)
    assert_events(events)
    assert events[-1]["response"]["id"] == "resp_mock_1"  # the provider's own events and ids
    assert raw.count(b"event: ") == len(events)
    metric = metrics.REASONING_TOKENS.labels(
        "default/chat", "mock-*", "default/alice", "default/up"
    )  # the rule's pattern
    assert metric._value.get() >= 2


# -- fallback across protocols -----------------------------------------------------------------------------------


def fallback_crs(upstream: str) -> dict[str, str]:
    """A native OpenAI pool in front of an Anthropic one."""
    return {
        "pools.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: native, namespace: default}}
            spec: {{provider: openai, baseURL: "{upstream}/v1", keys: [{{secretRef: {{name: keys, key: native}}}}]}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: claude, namespace: default}}
            spec: {{provider: anthropic, baseURL: "{upstream}", keys: [{{secretRef: {{name: keys, key: claude}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{native: native-key, claude: claude-key}}
        """,
        "route.yaml": """
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: smart, namespace: default}
            spec:
              rules:
                - models: [smart]
                  backends: [{pool: native, model: gpt-primary}]
                  fallbacks: [{pool: claude, model: claude-backup}]
                  retry: {attempts: 0}
        """,
        "consumer.yaml": CONSUMER,
    }


@pytest.mark.parametrize("stream", [False, True])
async def test_a_failing_native_pool_falls_back_to_a_translated_one(
    make_gateway: GatewayFactory, mock_llm: MockLLM, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(fallback_crs(mock_llm.url))
    await mock_llm.script({"status": 500, "error": "primary down"}, path="/responses")
    await mock_llm.script({"content": "From the backup."}, path="/messages")
    body = {"model": "smart", "input": "Hi", "tools": WEATHER, "stream": stream}
    async with gateway.post(RESPONSES, body) as response:
        assert response.status == 200
        assert response.headers["x-tollway-pool"] == "default/claude"
        raw = await response.read()
    if stream:
        events = events_of(raw)
        assert_events(events)
        final = events[-1]["response"]
    else:
        final = json.loads(raw)
        assert_response(final)
    assert final["output"][0]["content"][0]["text"] == "From the backup."
    assert [r["path"] for r in await mock_llm.requests()] == ["/v1/responses", "/v1/messages"]
    record = (await access_record(caplog, RESPONSES))["ai_log"]
    assert attempt_outcomes(record) == ["500", "ok"]


# -- stages and limits on this entry -----------------------------------------------------------------------------

DECORATED = """
    apiVersion: tollway.dev/v1alpha1
    kind: AIRoute
    metadata: {name: chat, namespace: default}
    spec:
      promptDecorator:
        prepend: [{role: system, content: "Platform rules for {consumer}."}]
      rules:
        - models: ["mock-*"]
          backends: [{pool: up}]
"""


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_the_prompt_decorator_applies(make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str) -> None:
    gateway = await make_gateway({**provider_crs(mock_llm.url, provider), "route.yaml": DECORATED})
    client = sdk(gateway)
    first = await client.responses.create(model="mock-gpt", instructions="Be brief.", input="Hello")
    await client.responses.create(model="mock-gpt", input="Again", previous_response_id=first.id)
    one, two = await mock_llm.requests()
    if provider == "openai":  # native: the platform's message is the first input item
        assert one["body"]["input"][0] == {
            "type": "message",
            "role": "system",
            "content": "Platform rules for default/alice.",
        }
        assert one["body"]["instructions"] == "Be brief."
        history = two["body"]["input"]
    else:
        assert one["body"]["messages"][0] == {"role": "system", "content": "Platform rules for default/alice."}
        history = two["body"]["messages"]
    # Decorations are the platform's, not the conversation's: a continued call carries them once.
    assert json.dumps(history).count("Platform rules") == 1


def limited_crs(upstream: str) -> dict[str, str]:
    return {
        **provider_crs(upstream, "openai-compatible"),
        "limit.yaml": """
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {name: budget, namespace: default}
            spec:
              key: consumer
              message: "Responses budget used up."
              limits: [{requests: 2, window: 1m}]
        """,
    }


async def test_limits_apply(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(limited_crs(mock_llm.url))
    for _ in range(2):
        async with gateway.post(RESPONSES, {"model": "mock-gpt", "input": "Hi"}) as response:
            assert response.status == 200 and "x-ratelimit-remaining-requests" in response.headers
    async with gateway.post(RESPONSES, {"model": "mock-gpt", "input": "Hi", "stream": True}) as response:
        assert response.status == 429 and int(response.headers["Retry-After"]) >= 1
        body = await response.json()
    assert body["error"]["message"] == "Responses budget used up." and body["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        await sdk(gateway).responses.create(model="mock-gpt", input="Hi")


# Guardrails are being built on their own branch; they reach this entry through the same call operations the
# decorator uses (Call.with_texts applies a mask to the native Responses body too: see test_responses_entry).


# -- hosted tools, failures, errors ------------------------------------------------------------------------------


async def test_web_search_without_a_stage_is_dropped_for_translated_pools_and_counted(
    make_gateway: GatewayFactory, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    capture_access(caplog)
    gateway = await make_gateway(provider_crs(mock_llm.url, "openai-compatible"))
    counter = metrics.RESPONSES_DROPPED.labels("tool", "web_search")
    before = counter._value.get()
    tools = [*WEATHER, {"type": "web_search", "external_web_access": False}]
    result = await sdk(gateway).responses.create(model="mock-gpt", input="Hi", tools=tools)  # type: ignore[arg-type]
    assert result.status == "completed"
    (sent,) = await mock_llm.requests()
    assert [t["function"]["name"] for t in sent["body"]["tools"]] == ["get_weather"]
    assert "web_search_options" not in sent["body"]  # no web-search stage on this route to take it
    assert counter._value.get() == before + 1
    record = (await access_record(caplog, RESPONSES))["ai_log"]
    assert record["responses"] == {"dropped": ["tool:web_search"], "web_search": "dropped"}


async def test_web_search_on_a_cache_hit_is_not_counted_as_dropped(
    make_gateway: GatewayFactory, mock_llm: MockLLM, caplog: pytest.LogCaptureFixture
) -> None:
    """A stage that answers before any search could run (here the cache) did not drop the tool."""
    capture_access(caplog)
    gateway = await make_gateway(cached_crs(mock_llm.url, "{mode: exact, ttl: 10m}"))
    counter = metrics.RESPONSES_DROPPED.labels("tool", "web_search")
    before = counter._value.get()
    body = {"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]}
    outcomes = []
    for _ in range(2):
        async with gateway.post(RESPONSES, body) as response:
            assert response.status == 200
            outcomes.append(response.headers["x-tollway-cache"])
        outcomes.append((await access_record(caplog, RESPONSES))["ai_log"]["responses"]["web_search"])
    assert outcomes == ["miss", "dropped", "hit", "answered_before"]
    assert counter._value.get() == before + 1  # the miss: no web-search stage on this route took it


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_a_stream_cut_after_its_first_event(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str
) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    await mock_llm.script({"chunks": 20, "reset_after_chunks": 3})
    async with gateway.post(RESPONSES, {"model": "mock-gpt", "input": "x", "stream": True}) as response:
        assert response.status == 200
        events = events_of(await response.read())
    assert_events(events)
    assert events[0]["type"] == "response.created"
    if provider == "openai":
        assert events[-1]["type"] == "error" and events[-1]["code"] == "upstream_stream_interrupted"
    else:
        assert events[-1]["type"] == "response.failed" and events[-1]["response"]["status"] == "failed"
    # The SDK tells the cut answer from a whole one: a failed response, or (native) an error it raises.
    await mock_llm.script({"chunks": 20, "reset_after_chunks": 3})
    kinds: list[str] = []
    with pytest.raises(openai.APIError) if provider == "openai" else contextlib.nullcontext():
        async with sdk(gateway).responses.stream(model="mock-gpt", input="x") as stream:
            kinds.extend([event.type async for event in stream])
    assert provider == "openai" or kinds[-1] == "response.failed"


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_errors_are_openai_json(make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    cases: list[tuple[str, str, Any, str | None, int, str]] = [
        ("POST", RESPONSES, {"model": "mock-gpt", "input": "x"}, None, 401, "missing_api_key"),
        ("POST", RESPONSES, {"model": "nope", "input": "x"}, "sk-alice", 404, "model_not_found"),
        ("POST", RESPONSES, {"model": "mock-gpt"}, "sk-alice", 400, "missing_input"),
        (
            "POST",
            RESPONSES,
            {"model": "mock-gpt", "input": "x", "previous_response_id": "resp_x"},
            "sk-alice",
            404,
            "previous_response_not_found",
        ),
        ("GET", RESPONSES, None, "sk-alice", 405, "method_not_allowed"),
        ("GET", f"{RESPONSES}/resp_unknown", None, "sk-alice", 404, "response_not_found"),
        ("DELETE", f"{RESPONSES}/resp_unknown", None, "sk-alice", 404, "response_not_found"),
        ("POST", f"{RESPONSES}/resp_unknown", {}, "sk-alice", 405, "method_not_allowed"),
    ]
    for method, path, body, key, status, code in cases:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with gateway.session.request(method, gateway.url + path, json=body, headers=headers) as response:
            assert response.status == status, (method, path)
            error = (await response.json())["error"]
        assert error["code"] == code and error["message"] and set(error) == {"message", "type", "param", "code"}
    await mock_llm.script({"status": 400, "error": "context too long"})
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(gateway).responses.create(model="mock-gpt", input="x")
    assert "context too long" in info.value.message
