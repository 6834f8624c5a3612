"""The compiler: CR documents + Secrets -> config + status, every status reason covered."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml
from tollway_contract import config_from_dict, config_to_dict
from tollway_operator.compiler import compile_crs
from tollway_operator.durations import parse_duration
from tollway_operator.status import ObjectRef


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


BASE = """
apiVersion: tollway.dev/v1alpha1
kind: ProviderKeyPool
metadata: {name: openai, namespace: team}
spec:
  provider: openai
  keys: [{secretRef: {name: openai-keys, key: primary}}, {secretRef: {name: more-keys}}]
  cooldown: {default: 10s, statuses: [429, "500-599"]}
  timeouts: {connect: 1s, firstByte: 1m}
---
apiVersion: v1
kind: Secret
metadata: {name: openai-keys, namespace: team}
data: {primary: c2stcHJvdmlkZXItMQ==}   # sk-provider-1
---
apiVersion: v1
kind: Secret
metadata: {name: more-keys, namespace: team}
stringData: {b: sk-provider-3, a: sk-provider-2}
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {name: alice, namespace: team, labels: {tier: gold}}
spec: {credentials: [{secretRef: {name: alice-key}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: alice-key, namespace: team}
stringData: {apiKey: sk-alice}
---
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {name: chat, namespace: team}
spec:
  match: {hosts: [LLM.example.com]}
  rules:
    - models: [gpt-4o, "gpt-4o-*"]
      backends: [{pool: openai, weight: 3}]
      retry: {attempts: 1, retryOn: ["429", timeout]}
      timeouts: {firstByte: 30s}
  access: {consumers: [alice], consumerSelector: {matchLabels: {tier: gold}}}
---
apiVersion: tollway.dev/v1alpha1
kind: TokenRateLimit
metadata: {name: per-consumer, namespace: team}
spec:
  key: consumer+model
  limits: [{tokens: 1000, window: 1m}, {requests: 10, window: 1s}, {tokens: 5000000, count: output, window: 30d}]
  overrides: [{match: {consumer: vip}, limits: [{tokens: 9999, window: 1m}]}]
"""


def conditions(result: Any, kind: str, name: str, namespace: str = "team") -> dict[str, tuple[str, str]]:
    status = result.statuses[ObjectRef(kind, namespace, name)]
    return {c.type: (c.status, c.message) for c in status.conditions()}


def test_valid_set_compiles_to_the_contract() -> None:
    result = compile_crs(docs(BASE))
    for ref, status in result.statuses.items():
        assert all(c.status == "True" for c in status.conditions()), (ref, status)
    config = result.config
    [pool] = config.pools
    assert pool.name == "team/openai" and pool.base_url == "https://api.openai.com/v1"
    assert [k.id for k in pool.keys] == ["team/openai-keys/primary", "team/more-keys/a", "team/more-keys/b"]
    assert pool.cooldown.default == 10 and pool.cooldown.statuses == ((429, 429), (500, 599))
    assert pool.timeouts.connect == 1 and pool.timeouts.first_byte == 60
    assert dict(result.secrets.keys)["team/openai-keys/primary"] == "sk-provider-1"
    [route] = config.routes
    assert route.hosts == ("llm.example.com",)
    assert route.rules[0].retry.attempts == 1 and route.rules[0].timeouts.first_byte == 30
    assert route.access.consumers == ("team/alice",)
    assert ("tier", "gold") in route.access.selectors[0]
    [consumer] = config.consumers
    assert consumer.key_hashes == (hashlib.sha256(b"sk-alice").hexdigest(),)
    [limit] = config.rate_limits
    assert limit.key == ("consumer", "model") and limit.routes == ("team/chat",)
    assert limit.limits[2].count == "output" and limit.limits[2].window == 30 * 86400


def test_no_plaintext_keys_in_the_config() -> None:
    result = compile_crs(docs(BASE))
    rendered = json.dumps(config_to_dict(result.config))
    for secret in ("sk-alice", "sk-provider-1", "sk-provider-2"):
        assert secret not in rendered


def test_output_is_deterministic_and_reloads_through_the_contract() -> None:
    a = compile_crs(docs(BASE))
    b = compile_crs(list(reversed(docs(BASE))))
    assert a.hash == b.hash and a.config == b.config
    again = config_from_dict(json.loads(json.dumps(config_to_dict(a.config))))
    assert again == a.config


def test_key_rotation_changes_the_hash() -> None:
    a = compile_crs(docs(BASE))
    b = compile_crs(docs(BASE.replace("sk-provider-2", "sk-provider-2-rotated")))
    assert a.hash != b.hash


@pytest.mark.parametrize(
    ("patch", "kind", "name", "condition", "fragment"),
    [
        ("backends: [{pool: openai, weight: 3}]", "AIRoute", "chat", "ResolvedRefs", "pool 'nope' not found"),
        ("name: openai-keys, key: primary", "ProviderKeyPool", "openai", "ResolvedRefs", "secret 'gone' not found"),
        ("name: openai-keys, key: primary", "ProviderKeyPool", "openai", "ResolvedRefs", "has no key 'missing'"),
        ("secretRef: {name: alice-key}", "Consumer", "alice", "ResolvedRefs", "secret 'nokey' not found"),
        ("access: {consumers: [alice]", "AIRoute", "chat", "ResolvedRefs", "consumer 'zed' not found"),
        ('models: [gpt-4o, "gpt-4o-*"]', "AIRoute", "chat", "Accepted", "already matched by spec.rules[0]"),
        ("provider: openai", "ProviderKeyPool", "openai", "Accepted", "spec.provider: must be one of"),
        ("cooldown: {default: 10s", "ProviderKeyPool", "openai", "Accepted", "is not a duration"),
        (
            "{tokens: 1000, window: 1m}",
            "TokenRateLimit",
            "per-consumer",
            "Accepted",
            "exactly one of tokens, requests or usd",
        ),
        ("{tokens: 1000, window: 1m}", "TokenRateLimit", "per-consumer", "Accepted", "out of range"),
        ("key: consumer+model", "TokenRateLimit", "per-consumer", "Accepted", "unknown key part 'tenant'"),
        ("key: consumer+model", "TokenRateLimit", "per-consumer", "ResolvedRefs", "AIRoute 'ghost' not found"),
        ('retryOn: ["429", timeout]', "AIRoute", "chat", "Accepted", "spec.rules[0].retry.retryOn[0]: must be one of"),
    ],
)
def test_status_reasons(patch: str, kind: str, name: str, condition: str, fragment: str) -> None:
    replacements = {
        "pool 'nope' not found": "backends: [{pool: nope}]",
        "secret 'gone' not found": "name: gone, key: primary",
        "has no key 'missing'": "name: openai-keys, key: missing",
        "secret 'nokey' not found": "secretRef: {name: nokey}",
        "consumer 'zed' not found": "access: {consumers: [alice, zed]",
        "already matched by spec.rules[0]": "models: [gpt-4o]\n      backends: [{pool: openai}]\n    - models: [gpt-4o]",
        "spec.provider: must be one of": "provider: openia",
        "is not a duration": "cooldown: {default: 10 seconds",
        "exactly one of tokens, requests or usd": "{tokens: 1000, requests: 5, window: 1m}",
        "out of range": "{tokens: 1000, window: 31d}",
        "unknown key part 'tenant'": "key: consumer+tenant",
        "AIRoute 'ghost' not found": "key: consumer+model\n  targetRefs: [{name: ghost}]",
        "spec.rules[0].retry.retryOn[0]: must be one of": "retryOn: [sometimes]",
    }
    text = BASE.replace(patch, replacements[fragment], 1)
    assert text != BASE
    result = compile_crs(docs(text))
    status, message = conditions(result, kind, name)[condition]
    assert status == "False" and fragment in message, message
    if condition == "Accepted":  # an invalid object is left out whole; the rest still compiles
        assert not any(item.name == f"team/{name}" for item in _items(result.config, kind))


def _items(config: Any, kind: str) -> tuple[Any, ...]:
    return {
        "AIRoute": config.routes,
        "ProviderKeyPool": config.pools,
        "Consumer": config.consumers,
        "TokenRateLimit": config.rate_limits,
    }[kind]


def test_route_to_a_rejected_pool_says_so() -> None:
    result = compile_crs(docs(BASE.replace("provider: openai", "provider: nope")))
    status, message = conditions(result, "AIRoute", "chat")["ResolvedRefs"]
    assert status == "False" and "pool 'openai' is not accepted" in message
    assert result.config.routes[0].rules[0].backends == ()  # kept: callers get a clear 503, not a 404


def test_generate_true_requests_a_secret() -> None:
    text = BASE.replace("secretRef: {name: alice-key}", "secretRef: {name: alice-generated}, generate: true")
    result = compile_crs(docs(text))
    [request] = result.to_generate
    assert (request.namespace, request.consumer, request.secret_name, request.key) == (
        "team",
        "alice",
        "alice-generated",
        "apiKey",
    )
    assert "will generate it" in conditions(result, "Consumer", "alice")["ResolvedRefs"][1]


def test_a_key_shared_by_two_consumers_stays_with_the_first() -> None:
    text = (
        BASE
        + """
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {name: zoe, namespace: team}
spec: {credentials: [{secretRef: {name: alice-key}}]}
"""
    )
    result = compile_crs(docs(text))
    by_name = {c.name: c for c in result.config.consumers}
    assert by_name["team/alice"].key_hashes and not by_name["team/zoe"].key_hashes
    assert "also used by consumer team/alice" in conditions(result, "Consumer", "zoe")["ResolvedRefs"][1]


def test_shadowed_model_across_routes_is_reported() -> None:
    text = (
        BASE
        + """
---
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {name: zzz, namespace: team}
spec:
  match: {hosts: [llm.example.com]}
  rules: [{models: [gpt-4o], backends: [{pool: openai}]}]
"""
    )
    result = compile_crs(docs(text))
    status, message = conditions(result, "AIRoute", "zzz")["Accepted"]
    assert status == "True" and "also claimed by route team/chat" in message


def test_foreign_documents_are_ignored_with_a_reason() -> None:
    result = compile_crs(docs(BASE + "\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"))
    assert any("Deployment" in note for note in result.ignored)


@pytest.mark.parametrize(("text", "seconds"), [("500ms", 0.5), ("30s", 30), ("1h30m", 5400), ("30d", 2592000)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1x", "s", "-1s", "1.5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("old", "new", "kind", "name", "fragment"),
    [
        (
            "provider: openai\n",
            "provider: openai\n  selection: fastest\n",
            "ProviderKeyPool",
            "openai",
            "spec.selection",
        ),
        (
            "timeouts: {connect: 1s",
            "timeouts: {idle: soon, connect: 1s",
            "ProviderKeyPool",
            "openai",
            "spec.timeouts.idle",
        ),
        (
            "provider: openai\n",
            "provider: openai\n  pricing: [{model: gpt-4o, input: -1, output: 2}]\n",
            "ProviderKeyPool",
            "openai",
            "spec.pricing[0].input",
        ),
        ("match: {hosts: [LLM.example.com]}", "match: {hosts: [7]}", "AIRoute", "chat", "spec.match.hosts[0]"),
        (
            "key: consumer+model",
            "key: consumer+model\n  failurePolicy: maybe",
            "TokenRateLimit",
            "per-consumer",
            "spec.failurePolicy",
        ),
    ],
)
def test_every_field_problem_rejects_the_object(old: str, new: str, kind: str, name: str, fragment: str) -> None:
    result = compile_crs(docs(BASE.replace(old, new, 1)))
    status, message = conditions(result, kind, name)["Accepted"]
    assert status == "False" and fragment in message, message


def test_pricing_compiles() -> None:
    text = BASE.replace(
        "provider: openai\n",
        "provider: openai\n  pricing: [{model: 'gpt-4o*', input: 2.5, cachedInput: 1.25, output: 10}]\n",
        1,
    )
    [pool] = compile_crs(docs(text)).config.pools
    assert pool.pricing[0].model == "gpt-4o*" and pool.pricing[0].cached_input == 1.25
