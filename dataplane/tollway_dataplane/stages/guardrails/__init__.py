"""Content safety (DESIGN section 7): checkers on the request, on the answer, and on streams through a window.

One module per checker type (rules, moderation, judge, aliyun, webhook), the stage and its response filter
(stage, respond, stream), the answer's shapes per dialect (view, responses_view), and what verdicts do and how
they are recorded (verdict, evaluate). `build` makes a rule's stage once per config snapshot; checkers that call
out reach their pool, credentials and the HTTP client through the snapshot's services.
"""

from __future__ import annotations

import logging

from tollway_contract.guardrails import credential_ids
from tollway_contract.model import (
    AliyunSettings,
    Checker,
    JudgeSettings,
    ModerationSettings,
    Rule,
    RulesSettings,
    WebhookSettings,
)

from ..base import StageServices
from ..poolclient import PoolClient
from .aliyun import AliyunChecker
from .judge import JudgeChecker
from .moderation import ModerationChecker
from .rules import RulesChecker
from .stage import GuardrailStage
from .verdict import CheckerRuntime
from .webhook import WebhookChecker

log = logging.getLogger("tollway.guardrails")


def build(rule: Rule, services: StageServices) -> GuardrailStage | None:
    if rule.guardrails is None:
        return None
    return GuardrailStage(rule.guardrails, [_checker(c, services) for c in rule.guardrails.checkers])


def _checker(checker: Checker, services: StageServices) -> CheckerRuntime:
    settings = checker.settings
    if isinstance(settings, RulesSettings):
        return RulesChecker(checker)
    if isinstance(settings, ModerationSettings | JudgeSettings):
        pool = services.pools.get(settings.pool)
        client = PoolClient(pool, services.http) if pool is not None else None
        return (
            ModerationChecker(checker, client)
            if isinstance(settings, ModerationSettings)
            else JudgeChecker(checker, client)
        )
    if isinstance(settings, AliyunSettings):
        return AliyunChecker(checker, services.secrets, services.http)
    assert isinstance(settings, WebhookSettings)
    return WebhookChecker(checker, services.secrets, services.http)


def warnings(rule: Rule, services: StageServices) -> list[str]:
    """Checkers whose pool or credentials are missing: they fail on every call, so failurePolicy decides."""
    if rule.guardrails is None:
        return []
    out = []
    for checker in rule.guardrails.checkers:
        settings = checker.settings
        if isinstance(settings, ModerationSettings | JudgeSettings) and settings.pool not in services.pools:
            out.append(f"guardrail checker {checker.name}: pool {settings.pool} not found; it fails until it exists")
        missing = [i for i in credential_ids(settings) if i not in services.secrets]
        if missing:
            out.append(
                f"guardrail checker {checker.name}: {len(missing)} credential(s) have no value in the secrets document"
            )
    return out
