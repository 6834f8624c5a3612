"""One caller cannot change what a limit or the metrics mean for everyone else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GatewayFactory, MockLLM
from harness import (
    CLIENT_KEY,
    CONFIGURED_MODEL_LABELS,
    Stack,
    check_answer,
    figures,
    model_label_values,
    request_bytes,
    send,
    start_stack,
)

CHAT = "/v1/chat/completions"
# 11 characters of content: an input estimate of 3 tokens; with max_tokens 7 each request reserves 10.
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 7}
SHARED_BUDGET = """
    apiVersion: tollway.dev/v1alpha1
    kind: ProviderKeyPool
    metadata: {{name: mock, namespace: default}}
    spec: {{provider: openai-compatible, baseURL: "{upstream}/v1"}}
    ---
    apiVersion: tollway.dev/v1alpha1
    kind: AIRoute
    metadata: {{name: chat, namespace: default}}
    spec:
      rules: [{{models: ["*"], backends: [{{pool: mock}}]}}]
    ---
    apiVersion: tollway.dev/v1alpha1
    kind: Consumer
    metadata: {{name: mallory, namespace: default}}
    spec: {{credentials: [{{secretRef: {{name: keys, key: mallory}}}}]}}
    ---
    apiVersion: tollway.dev/v1alpha1
    kind: Consumer
    metadata: {{name: alice, namespace: default}}
    spec: {{credentials: [{{secretRef: {{name: keys, key: alice}}}}]}}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {{name: keys, namespace: default}}
    stringData: {{mallory: sk-mallory, alice: sk-alice}}
    ---
    apiVersion: tollway.dev/v1alpha1
    kind: TokenRateLimit
    metadata: {{name: shared, namespace: default}}
    spec:
      key: route
      limits: [{{tokens: 30, window: 1h}}]
"""


@pytest.mark.parametrize(
    "hostile",
    [{"max_tokens": -1_000_000_000_000}, {"max_completion_tokens": -1_000_000}, {"max_tokens": 0}],
    ids=["max_tokens", "max_completion_tokens", "zero"],
)
async def test_a_hostile_max_tokens_cannot_switch_a_shared_limit_off(
    make_gateway: GatewayFactory, mock_llm: MockLLM, hostile: dict[str, int]
) -> None:
    handle = await make_gateway({"all.yaml": SHARED_BUDGET.format(upstream=mock_llm.url)})
    await mock_llm.script({"usage": {"prompt_tokens": 3, "completion_tokens": 7}}, times=0)  # usage = estimate
    async with handle.post(CHAT, {**BODY, **hostile}, key="sk-mallory") as response:
        assert response.status == 400
        assert (await response.json())["error"]["message"].startswith(f"'{next(iter(hostile))}' must be")

    async def one() -> int:
        async with handle.post(CHAT, BODY, key="sk-alice") as response:
            await response.read()
            return response.status

    statuses = await asyncio.gather(*(one() for _ in range(5)))
    assert sorted(statuses) == [200, 200, 200, 429, 429]  # the budget of 30 holds three requests of 10, as before
    assert len(await mock_llm.requests()) == 3  # the hostile request never reached the provider


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(Path(tmp_path_factory.mktemp("labels")))
    yield running
    running.stop()
    figures.flush("labels")


def test_invented_model_names_do_not_become_metric_labels(stack: Stack) -> None:
    headers = [(b"Authorization", b"Bearer " + CLIENT_KEY.encode()), (b"Content-Type", b"application/json")]
    for i in range(300):
        for model in (f"invented-{i}", f"mock-invented-{i}", f"claude-invented-{i}"):
            body = b'{"model":"%s","messages":[{"role":"user","content":"hi"}]}' % model.encode()
            answer = send(stack.port, request_bytes("POST", CHAT, headers, body))
            check_answer(answer, path=CHAT)
            assert answer is not None and answer.status in (200, 404)
            figures.add("label inputs")
    labels = model_label_values(stack.metrics())
    assert labels <= CONFIGURED_MODEL_LABELS, sorted(labels - CONFIGURED_MODEL_LABELS)[:5]
    assert {"other", "mock-*", "claude-*"} <= labels  # unknown names collapse; glob matches carry their pattern
