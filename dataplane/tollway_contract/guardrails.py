"""Read a `guardrails` object: the same reader serves a rendered config and an AIRoute's spec.

The two documents differ only where a field refers to something outside the object: a duration (seconds in a
rendered config, "2s" in a spec), a pool (qualified in a rendered config, a same-namespace name in a spec) and a
credential (an id into the secrets document, or a Secret reference the compiler turns into ids). A `Resolver`
reads those; everything else, and every check on it, is written once here, so a hand-written config is judged
exactly like a custom resource.
"""

from __future__ import annotations

import re
from typing import Any

from .model import (
    ALIYUN_RISK_LEVELS,
    CHECKER_TYPES,
    DEFAULT_GUARDRAIL_MESSAGE,
    FAILURE_POLICIES,
    GUARDRAIL_ACTIONS,
    GUARDRAIL_DIRECTIONS,
    GUARDRAIL_ON_BLOCK,
    GUARDRAIL_SCOPES,
    JUDGE_FORMATS,
    MASKING_CHECKERS,
    PII_DETECTORS,
    AliyunSettings,
    Checker,
    CheckerSettings,
    Guardrails,
    JudgeSettings,
    ModerationSettings,
    RulesSettings,
    WebhookSettings,
)
from .reader import FieldReader, describe_kind
from .reader import join_path as _join
from .references import RENDERED, Resolver

MAX_WINDOW = 65536
# Where a checker's model calls can go: `/moderations` exists on OpenAI-shaped servers only; a judge is a chat
# completion, made through the pool's translator, which Azure deployments serve too.
MODERATION_PROVIDERS = ("openai", "openai-compatible")
JUDGE_PROVIDERS = ("openai", "openai-compatible", "azure-openai")
_ALIYUN_KEYS = ("accessKeyId", "accessKeySecret")
_ALIYUN_OPTIONAL = ("securityToken",)


def read_guardrails(r: FieldReader, value: Any, path: str, resolver: Resolver = RENDERED) -> Guardrails | None:
    """A guardrails object (the same shape in a rendered config and in an AIRoute's spec)."""
    data = r.obj(value, path)
    direction = r.enum(data, "direction", path, GUARDRAIL_DIRECTIONS, "both")
    timeout = resolver.seconds(r, data, "timeout", path, maximum=60)
    stream = r.obj(data.get("stream"), _join(path, "stream"))
    window = r.int_(stream, "window", _join(path, "stream"), 256, minimum=1)
    if window is not None and window > MAX_WINDOW:
        r.fail(_join(path, "stream.window"), f"must be at most {MAX_WINDOW} characters, got {window}")
    message = r.str_(data, "message", path)
    checkers_path = _join(path, "checkers")
    checkers = r.each(data.get("checkers"), checkers_path, lambda d, p: _checker(r, d, p, direction, resolver))
    if not r.items(data.get("checkers"), checkers_path):
        r.fail(checkers_path, "must hold at least one checker")
    seen: set[str] = set()
    for i, checker in enumerate(checkers):
        if checker.name in seen:
            r.fail(f"{checkers_path}[{i}].name", f"duplicate checker name {checker.name!r}")
        seen.add(checker.name)
    if not checkers:
        return None
    return Guardrails(
        checkers=checkers,
        failure_policy=r.enum(data, "failurePolicy", path, FAILURE_POLICIES, "closed"),
        timeout=timeout or 2.0,
        stream_window=window or 256,
        message=message or DEFAULT_GUARDRAIL_MESSAGE,
        on_block=r.enum(data, "onBlock", path, GUARDRAIL_ON_BLOCK, "error"),
    )


def _checker(
    r: FieldReader, data: dict[str, Any], path: str, default_direction: str, resolver: Resolver
) -> Checker | None:
    name = r.str_(data, "name", path, required=True)
    kind = r.enum(data, "type", path, CHECKER_TYPES, "")
    if "type" not in data:
        r.fail(_join(path, "type"), "is required")
    action = r.enum(data, "action", path, GUARDRAIL_ACTIONS, "block")
    if action == "mask" and kind and kind not in MASKING_CHECKERS:
        r.fail(
            _join(path, "action"),
            f"a {kind} checker only classifies text, it cannot mask; use block or audit (mask: rules or webhook)",
        )
    direction = r.enum(data, "direction", path, GUARDRAIL_DIRECTIONS, default_direction)
    scope = r.strings(data, "scope", path) if "scope" in data else GUARDRAIL_SCOPES
    for i, item in enumerate(scope):
        if item not in GUARDRAIL_SCOPES:
            r.fail(f"{_join(path, 'scope')}[{i}]", f"must be one of {', '.join(GUARDRAIL_SCOPES)}; got {item!r}")
    if "scope" in data and not scope:
        r.fail(_join(path, "scope"), "must name at least one kind of text")
    settings = _SETTINGS[kind](r, data, path, resolver) if kind in _SETTINGS else None
    if name is None or settings is None:
        return None
    return Checker(name=name, type=kind, settings=settings, action=action, direction=direction, scope=scope)


def _rules(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> RulesSettings | None:
    ignore_case = _bool(r, data, "ignoreCase", path)
    patterns = r.strings(data, "patterns", path)
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as exc:
            r.fail(f"{_join(path, 'patterns')}[{i}]", f"is not a valid regular expression: {exc}")
    detectors = r.strings(data, "detectors", path)
    for i, detector in enumerate(detectors):
        if detector not in PII_DETECTORS:
            r.fail(f"{_join(path, 'detectors')}[{i}]", f"must be one of {', '.join(PII_DETECTORS)}; got {detector!r}")
    keywords = r.strings(data, "keywords", path)
    if not patterns and not keywords and not detectors:
        r.fail(path, "a rules checker needs patterns, keywords or detectors")
        return None
    replacement = data.get("replacement", "[MASKED]")
    if not isinstance(replacement, str):
        r.fail(_join(path, "replacement"), f"must be a string, got {describe_kind(replacement)}")
        replacement = "[MASKED]"
    return RulesSettings(
        patterns=patterns, keywords=keywords, ignore_case=ignore_case, detectors=detectors, replacement=replacement
    )


def _moderation(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> ModerationSettings | None:
    pool = resolver.pool(r, data, "pool", path, MODERATION_PROVIDERS)
    model = r.str_(data, "model", path) or "omni-moderation-latest"
    thresholds_data = r.obj(data.get("thresholds"), _join(path, "thresholds"))
    thresholds = []
    for category, threshold in sorted(thresholds_data.items()):
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
            r.fail(_join(_join(path, "thresholds"), str(category)), f"must be a score from 0 to 1, got {threshold!r}")
            continue
        thresholds.append((str(category), float(threshold)))
    categories = r.strings(data, "categories", path)
    if pool is None:
        return None
    return ModerationSettings(pool=pool, model=model, categories=categories, thresholds=tuple(thresholds))


def _judge(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> JudgeSettings | None:
    pool = resolver.pool(r, data, "pool", path, JUDGE_PROVIDERS)
    model = r.str_(data, "model", path, required=True)
    judge_format = r.enum(data, "format", path, JUDGE_FORMATS, "")
    if "format" not in data:
        r.fail(_join(path, "format"), f"is required: one of {', '.join(JUDGE_FORMATS)}")
    block_on = r.strings(data, "blockOn", path)
    if pool is None or model is None or not judge_format:
        return None
    return JudgeSettings(pool=pool, model=model, format=judge_format, block_on=block_on)


def _aliyun(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> AliyunSettings | None:
    region = r.str_(data, "region", path) or "cn-shanghai"
    if not re.fullmatch(r"[a-z0-9-]+", region):
        r.fail(_join(path, "region"), f"must be a region id such as cn-shanghai, got {region!r}")
    endpoint = r.str_(data, "endpoint", path)
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        r.fail(_join(path, "endpoint"), f"must be a full URL starting with http:// or https://, got {endpoint!r}")
    risk_level = r.enum(data, "riskLevel", path, ALIYUN_RISK_LEVELS, "high")
    advice = _bool(r, data, "adviceAsMessage", path)
    if "credentials" not in data:
        r.fail(_join(path, "credentials"), "is required (an AccessKey: accessKeyId and accessKeySecret)")
        return None
    ids = resolver.credentials(r, data["credentials"], _join(path, "credentials"), _ALIYUN_KEYS, _ALIYUN_OPTIONAL)
    if ids is None:
        return None
    return AliyunSettings(
        access_key_id=ids["accessKeyId"],
        access_key_secret=ids["accessKeySecret"],
        security_token=ids.get("securityToken"),
        region=region,
        endpoint=endpoint.rstrip("/") if endpoint else None,
        risk_level=risk_level,
        advice_as_message=advice,
    )


def _webhook(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> WebhookSettings | None:
    url = r.str_(data, "url", path, required=True)
    if url is not None and not url.startswith(("http://", "https://")):
        r.fail(_join(path, "url"), f"must start with http:// or https://, got {url!r}")
    token = None
    if "credentials" in data:
        ids = resolver.credentials(r, data["credentials"], _join(path, "credentials"), ("token",), ())
        if ids is None:
            return None
        token = ids["token"]
    return WebhookSettings(url=url, token=token) if url is not None else None


def _bool(r: FieldReader, data: dict[str, Any], key: str, path: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        r.fail(_join(path, key), f"must be a boolean, got {describe_kind(value)}")
        return False
    return value


_SETTINGS: dict[str, Any] = {
    "rules": _rules,
    "openai-moderation": _moderation,
    "llm-judge": _judge,
    "aliyun-moderation": _aliyun,
    "webhook": _webhook,
}


def pools_of(guardrails: Guardrails) -> list[tuple[int, str]]:
    """(checker index, pool) of every checker that calls a pool: for reference checks."""
    return [
        (i, c.settings.pool)
        for i, c in enumerate(guardrails.checkers)
        if isinstance(c.settings, ModerationSettings | JudgeSettings)
    ]


def credential_ids(settings: CheckerSettings) -> tuple[str, ...]:
    """The secrets-document ids a checker's settings name."""
    if isinstance(settings, AliyunSettings):
        return tuple(i for i in (settings.access_key_id, settings.access_key_secret, settings.security_token) if i)
    if isinstance(settings, WebhookSettings) and settings.token:
        return (settings.token,)
    return ()
