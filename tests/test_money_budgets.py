"""Budgets in US dollars: priced reservations at the ceiling, settlement at the real cost, compile-time checks."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest
import yaml
from conftest import GatewayFactory, MockLLM, RedisServer
from test_ratelimit import BODY, CHAT, EXACT_USAGE, burst
from tollway_contract import ConfigError, config_from_dict, config_to_dict
from tollway_contract.model import Backend, Pool, Price, Rule
from tollway_contract.prices import ceiling
from tollway_dataplane.pricing import micro_usd, reserve_micro_usd
from tollway_dataplane.redisconn import RedisOptions
from tollway_operator.compiler import compile_crs
from tollway_operator.status import ObjectRef

# With EXACT_USAGE (3 input + 7 output tokens) at $1 / $2 per million: 3 + 14 = 17 micro-dollars a request.
CHEAP = "[{model: '*', input: 1, output: 2}]"
DEAR = "[{model: '*', input: 10, output: 20}]"  # 170 micro-dollars for the same request


def money_crs(
    upstream: str, limits: str, *, pricing: str = CHEAP, fallback: str = "", extra_spec: str = ""
) -> dict[str, str]:
    fallback_pool = (
        f"""
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: backup, namespace: default}}
            spec: {{provider: openai-compatible, baseURL: "{upstream}/v1", pricing: {fallback}}}
        """
        if fallback
        else ""
    )
    fallbacks = ", fallbacks: [{pool: backup}]" if fallback else ""
    return {
        "base.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: mock, namespace: default}}
            spec: {{provider: openai-compatible, baseURL: "{upstream}/v1", pricing: {pricing}}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: chat, namespace: default}}
            spec:
              rules: [{{models: ["*"], backends: [{{pool: mock}}]{fallbacks}}}]
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: alice, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: alice}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{alice: sk-alice}}
        """
        + fallback_pool,
        "limit.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {{name: budget, namespace: default}}
            spec:
              message: "Team budget used up."
              limits: {limits}
              {extra_spec}
        """,
    }


def compiled(files: dict[str, str]) -> Any:
    documents = [d for text in files.values() for d in yaml.safe_load_all(textwrap.dedent(text)) if d]
    return compile_crs(documents)


# -- the arithmetic -----------------------------------------------------------------------------------------


def test_micro_dollars_round_up_without_float_noise() -> None:
    assert micro_usd(0.000017) == 17
    assert micro_usd(3 * 0.1 / 1e5) == 3  # 3.0000000000000004 micro-dollars is 3
    assert micro_usd(0.0000171) == 18
    assert reserve_micro_usd(3, 7, Price("*", 1.0, 2.0)) == 17
    assert reserve_micro_usd(-5, -1_000_000_000_000, Price("*", 1.0, 2.0)) == 0  # nonsense never refunds


def test_ceiling_is_the_dearest_backend_or_fallback_per_kind_of_token() -> None:
    pools = {
        "a": Pool("a", "openai", "http://a", pricing=(Price("gpt-4o", 2.5, 10.0, cached_input=1.25),)),
        "b": Pool("b", "openai", "http://b", pricing=(Price("big-*", 5.0, 8.0),)),
        "c": Pool("c", "openai", "http://c", pricing=(Price("*", 0.5, 15.0, cached_input=6.0),)),
    }
    rule = Rule(
        models=("gpt-4o",),
        backends=(Backend("a"), Backend("b", model="big-model")),
        fallbacks=(Backend("c"),),
    )
    top = ceiling(rule, "gpt-4o", pools)
    assert top is not None and (top.input, top.output) == (6.0, 15.0)  # c's cached input is dearer than any input
    assert ceiling(Rule(models=("x",), backends=(Backend("b"),)), "x", pools) is None


# -- compile-time checks ------------------------------------------------------------------------------------


def test_a_money_budget_needs_a_price_for_every_model(mock_llm: MockLLM) -> None:
    files = money_crs(mock_llm.url, "[{usd: 50, window: 30d}]", pricing="[{model: 'gpt-*', input: 1, output: 2}]")
    result = compiled(files)
    status = result.statuses[ObjectRef("TokenRateLimit", "default", "budget")]
    assert status.rejected and not result.config.rate_limits
    message = "; ".join(status.invalid)
    assert "route default/chat rule 0: pool default/mock has no price for models matching '*'" in message
    priced = compiled(money_crs(mock_llm.url, "[{usd: 50, window: 30d}]"))
    (limit,) = priced.config.rate_limits
    assert limit.limits[0].usd == 50.0 and limit.limits[0].amount == 50_000_000
    assert priced.statuses[ObjectRef("TokenRateLimit", "default", "budget")].extra["limitsSummary"] == "$50/2.592e+06s"


@pytest.mark.parametrize(
    "limits",
    ["[{usd: 5, tokens: 10, window: 1m}]", "[{usd: 0, window: 1m}]", "[{usd: 5, count: input, window: 1m}]"],
)
def test_invalid_money_limits(mock_llm: MockLLM, limits: str) -> None:
    status = compiled(money_crs(mock_llm.url, limits)).statuses[ObjectRef("TokenRateLimit", "default", "budget")]
    assert status.rejected, status


def test_a_hand_written_config_is_held_to_the_same_rule(mock_llm: MockLLM) -> None:
    data = config_to_dict(compiled(money_crs(mock_llm.url, "[{usd: 1, window: 1h}]")).config)
    assert config_from_dict(data).rate_limits[0].limits[0].usd == 1.0  # round trip
    data["pools"][0]["pricing"] = [{"model": "other", "input": 1, "output": 1}]
    with pytest.raises(ConfigError, match="has a usd limit, but route default/chat rule 0: pool default/mock"):
        config_from_dict(data)


# -- through the gateway ------------------------------------------------------------------------------------


async def test_a_burst_spends_exactly_the_budget(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(money_crs(mock_llm.url, "[{usd: 0.00017, window: 30d}]"))  # 10 requests of 17
    await mock_llm.script(EXACT_USAGE, times=0)
    statuses = await burst(handle.session, [handle.url], 30)
    assert statuses.count(200) == 10 and statuses.count(429) == 20


async def test_headers_and_the_spent_answer(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(money_crs(mock_llm.url, "[{usd: 0.00004, window: 1h}, {requests: 100, window: 1m}]"))
    await mock_llm.script(EXACT_USAGE, times=0)
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 200
        assert response.headers["x-ratelimit-limit-usd"] == "0.00004"
        assert response.headers["x-ratelimit-remaining-usd"] == "0.000023"  # 40 - 17 micro-dollars
        assert response.headers["x-ratelimit-limit-requests"] == "100"
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 200
    async with handle.post(CHAT, BODY) as response:  # 6 micro-dollars left, 17 needed
        assert response.status == 429
        error = (await response.json())["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "budget_exceeded"
        assert error["message"].startswith("Team budget used up. The budget of 0.00004 USD per 1h is spent;")
        assert "renews enough for this request in" in error["message"]
        assert int(response.headers["Retry-After"]) >= 1


async def test_reserved_at_the_ceiling_settled_at_the_real_cost(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    # The backend costs 17 a request, the fallback 170: the estimate is reserved at 170 (the fallback may serve),
    # and the answer from the cheap backend settles it to 17.
    handle = await make_gateway(money_crs(mock_llm.url, "[{usd: 0.001, window: 30d}]", fallback=DEAR))
    await mock_llm.script(EXACT_USAGE, times=0)
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/mock"
        assert response.headers["x-ratelimit-remaining-usd"] == "0.00083"  # 1000 - 170 reserved
    await asyncio.sleep(0.1)  # settlement runs after the response
    async with handle.post(CHAT, BODY) as response:
        assert response.headers["x-ratelimit-remaining-usd"] == "0.000813"  # 1000 - 17 settled - 170 reserved


async def test_the_fallback_settles_at_its_own_price(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    handle = await make_gateway(money_crs(mock_llm.url, "[{usd: 0.001, window: 30d}]", fallback=DEAR))
    await mock_llm.script({"status": 500}, times=1)  # the backend (keyless: one attempt) fails; the fallback serves
    await mock_llm.script(EXACT_USAGE, times=0)
    async with handle.post(CHAT, BODY) as response:
        assert response.status == 200 and response.headers["x-tollway-pool"] == "default/backup"
    await asyncio.sleep(0.1)
    async with handle.post(CHAT, BODY) as response:
        assert response.headers["x-ratelimit-remaining-usd"] == "0.00066"  # 1000 - 170 settled - 170 reserved


async def test_money_budgets_in_redis(
    make_gateway: GatewayFactory, mock_llm: MockLLM, redis_server: RedisServer
) -> None:
    files = money_crs(mock_llm.url, "[{usd: 0.00017, window: 30d}]", extra_spec="failurePolicy: closed")
    handle = await make_gateway(files, redis=RedisOptions(redis_server.url))
    await mock_llm.script(EXACT_USAGE, times=0)
    statuses = await burst(handle.session, [handle.url], 30)
    assert statuses.count(200) == 10 and statuses.count(429) == 20
