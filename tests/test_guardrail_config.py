"""Guardrail settings through the compiler and the contract: route-wide and per rule, Secret references turned
into ids whose values travel only in the secrets document, status messages that name the field, and a
hand-written config judged by the same reader."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml
from tollway_contract import config_to_dict, secrets_to_dict
from tollway_contract.load import config_from_dict
from tollway_contract.model import AliyunSettings, JudgeSettings, RulesSettings, WebhookSettings
from tollway_contract.reader import ConfigError
from tollway_operator.compiler import compile_crs

BASE = """
apiVersion: tollway.dev/v1alpha1
kind: ProviderKeyPool
metadata: {name: mock, namespace: default}
spec: {provider: openai-compatible, baseURL: "http://127.0.0.1:1/v1"}
---
apiVersion: tollway.dev/v1alpha1
kind: ProviderKeyPool
metadata: {name: claude, namespace: default}
spec: {provider: anthropic}
---
apiVersion: v1
kind: Secret
metadata: {name: aliyun-ak, namespace: default}
stringData: {accessKeyId: LTAI-compiler-test, accessKeySecret: compiler-test-secret}
---
apiVersion: v1
kind: Secret
metadata: {name: hook, namespace: default}
stringData: {bearer: hook-test-token}
"""


def compile_route(guardrails: str, rule_guardrails: str = "") -> Any:
    route = f"""
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat, namespace: default}}
spec:
  rules:
    - models: [a]
      backends: [{{pool: mock}}]
    - models: [b]
      backends: [{{pool: mock}}]
{textwrap.indent(rule_guardrails, "      ")}
  guardrails:
{textwrap.indent(textwrap.dedent(guardrails), "    ")}
"""
    return compile_crs([d for d in yaml.safe_load_all(BASE + "---\n" + route) if d])


def route_status(result: Any) -> dict[str, Any]:
    (status,) = [s for ref, s in result.statuses.items() if ref.kind == "AIRoute"]
    return {c.type: c for c in status.conditions()}


ALL = """
timeout: 1500ms
failurePolicy: open
stream: {window: 128}
onBlock: completion
message: Not here.
direction: request
checkers:
  - {name: pii, type: rules, action: mask, detectors: [email], direction: both, scope: [user, tool]}
  - {name: judge, type: llm-judge, pool: mock, model: llama-guard-3-8b, format: llama-guard, blockOn: [S1]}
  - {name: aliyun, type: aliyun-moderation, region: cn-beijing, credentials: {secretRef: {name: aliyun-ak}}, riskLevel: medium}
  - {name: corp, type: webhook, url: "http://guard.corp/check", credentials: {secretRef: {name: hook, key: bearer}}}
"""


def test_every_checker_type_compiles_and_credentials_become_ids() -> None:
    result = compile_route(ALL, "guardrails: {checkers: [{name: only-b, type: rules, keywords: [x]}]}")
    assert route_status(result)["Accepted"].status == "True", route_status(result)["Accepted"].message
    first, second = result.config.routes[0].rules
    g = first.guardrails
    assert (g.timeout, g.failure_policy, g.stream_window, g.on_block, g.message) == (
        1.5,
        "open",
        128,
        "completion",
        "Not here.",
    )
    pii, judge, aliyun, corp = g.checkers
    assert pii.direction == "both" and pii.scope == ("user", "tool") and isinstance(pii.settings, RulesSettings)
    assert judge.direction == "request"  # the guardrails' direction is every checker's default
    assert judge.settings == JudgeSettings(
        pool="default/mock", model="llama-guard-3-8b", format="llama-guard", block_on=("S1",)
    )
    assert aliyun.settings == AliyunSettings(
        access_key_id="default/aliyun-ak/accessKeyId",
        access_key_secret="default/aliyun-ak/accessKeySecret",
        region="cn-beijing",
        risk_level="medium",
    )
    assert corp.settings == WebhookSettings(url="http://guard.corp/check", token="default/hook/bearer")
    assert [c.name for c in second.guardrails.checkers] == ["only-b"]  # a rule's own guardrails replace the route's
    rendered = str(config_to_dict(result.config))
    assert "compiler-test-secret" not in rendered and "hook-test-token" not in rendered
    keys = secrets_to_dict(result.secrets)["keys"]
    assert keys["default/aliyun-ak/accessKeySecret"] == "compiler-test-secret"
    assert keys["default/hook/bearer"] == "hook-test-token"
    assert config_from_dict(config_to_dict(result.config)).routes == result.config.routes  # the contract round-trips


@pytest.mark.parametrize(
    ("guardrails", "fragment"),
    [
        ("checkers: []", "spec.guardrails.checkers: must hold at least one checker"),
        (
            "checkers: [{name: m, type: openai-moderation, pool: mock, action: mask}]",
            "spec.guardrails.checkers[0].action: a openai-moderation checker only classifies text",
        ),
        (
            "checkers: [{name: r, type: rules}]",
            "spec.guardrails.checkers[0]: a rules checker needs patterns, keywords or detectors",
        ),
        (
            "checkers: [{name: r, type: rules, patterns: ['(unclosed']}]",
            "spec.guardrails.checkers[0].patterns[0]: is not a valid regular expression",
        ),
        (
            "checkers: [{name: r, type: rules, detectors: [passport]}]",
            "spec.guardrails.checkers[0].detectors[0]: must be one of",
        ),
        (
            "checkers: [{name: j, type: llm-judge, pool: mock, model: m}]",
            "spec.guardrails.checkers[0].format: is required",
        ),
        (
            "checkers: [{name: j, type: llm-judge, pool: claude, model: m, format: shieldgemma}]",
            "spec.guardrails.checkers[0].pool: pool 'claude' speaks anthropic",
        ),
        ("checkers: [{name: a, type: aliyun-moderation}]", "spec.guardrails.checkers[0].credentials: is required"),
        (
            "checkers: [{name: r, type: rules, keywords: [x]}, {name: r, type: rules, keywords: [y]}]",
            "spec.guardrails.checkers[1].name: duplicate checker name 'r'",
        ),
        ("timeout: 5 seconds\ncheckers: [{name: r, type: rules, keywords: [x]}]", "spec.guardrails.timeout"),
        (
            "stream: {window: 0}\ncheckers: [{name: r, type: rules, keywords: [x]}]",
            "spec.guardrails.stream.window: must be at least 1",
        ),
        (
            "checkers: [{name: r, type: rules, keywords: [x], scope: [everything]}]",
            "spec.guardrails.checkers[0].scope[0]: must be one of",
        ),
    ],
)
def test_invalid_settings_reject_the_route_naming_the_field(guardrails: str, fragment: str) -> None:
    result = compile_route(guardrails)
    accepted = route_status(result)["Accepted"]
    assert result.config.routes == () and accepted.status == "False"
    assert fragment in accepted.message, accepted.message


def test_unresolved_references_are_kept_so_the_policy_decides() -> None:
    result = compile_route(
        """
        checkers:
          - {name: j, type: llm-judge, pool: missing-pool, model: m, format: llama-guard}
          - {name: a, type: aliyun-moderation, credentials: {secretRef: {name: missing-secret}}}
        """
    )
    conditions = route_status(result)
    assert conditions["Accepted"].status == "True" and conditions["ResolvedRefs"].status == "False"
    message = conditions["ResolvedRefs"].message
    assert "spec.guardrails.checkers[0].pool: pool 'missing-pool' not found; what uses it fails" in message
    assert "secret 'missing-secret' not found" in conditions["ResolvedRefs"].message
    judge, aliyun = result.config.routes[0].rules[0].guardrails.checkers
    assert judge.settings.pool == "default/missing-pool"
    assert aliyun.settings.access_key_id == "default/missing-secret/accessKeyId"
    assert "default/missing-secret/accessKeyId" not in dict(result.secrets.keys)
    config_from_dict(config_to_dict(result.config))  # the data plane still loads it (and warns)


def test_a_hand_written_config_is_judged_by_the_same_reader() -> None:
    doc = {
        "version": 1,
        "pools": [{"name": "p", "provider": "openai", "baseURL": "https://x"}],
        "routes": [
            {
                "name": "r",
                "rules": [
                    {
                        "models": ["m"],
                        "backends": [{"pool": "p"}],
                        "guardrails": {
                            "timeout": "2s",
                            "checkers": [{"name": "w", "type": "webhook", "url": "ftp://x", "credentials": {}}],
                        },
                    }
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    text = str(info.value)
    assert "routes[0].rules[0].guardrails.timeout: must be a positive number of seconds" in text
    assert "routes[0].rules[0].guardrails.checkers[0].url: must start with http:// or https://" in text
    assert "routes[0].rules[0].guardrails.checkers[0].credentials.token: is required" in text
