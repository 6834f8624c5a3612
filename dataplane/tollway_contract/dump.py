"""Serialise the contract to plain data (the exact shape `load` reads) and compute its content hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .model import (
    AliyunSettings,
    Backend,
    Cache,
    Checker,
    Consumer,
    Endpoints,
    GatewayConfig,
    Guardrails,
    JudgeSettings,
    Limit,
    ModerationSettings,
    Pool,
    PromptDecorator,
    RateLimit,
    Route,
    Rule,
    RulesSettings,
    SearchEngine,
    SecretsConfig,
    Timeouts,
    WebhookSettings,
    WebSearch,
)


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and v != {} and v != []}


def _timeouts(t: Timeouts | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return _drop_none({"connect": t.connect, "firstByte": t.first_byte, "idle": t.idle, "total": t.total})


def _pool(p: Pool) -> dict[str, Any]:
    return _drop_none(
        {
            "name": p.name,
            "provider": p.provider,
            "baseURL": p.base_url or None,
            "keys": [{"id": k.id} for k in p.keys],
            "selection": p.selection,
            "cooldown": {
                "default": p.cooldown.default,
                "max": p.cooldown.max,
                "statuses": [lo if lo == hi else [lo, hi] for lo, hi in p.cooldown.statuses],
            },
            "timeouts": _timeouts(p.timeouts),
            "headers": dict(p.headers),
            "azure": {"apiVersion": p.azure_api_version} if p.azure_api_version else None,
            "pricing": [
                _drop_none({"model": x.model, "input": x.input, "cachedInput": x.cached_input, "output": x.output})
                for x in p.pricing
            ],
            "endpoints": _endpoints(p.endpoints),
        }
    )


def _endpoints(e: Endpoints | None) -> dict[str, Any] | None:
    if e is None:
        return None
    metrics = e.metrics
    return {
        # urls stays even when empty: a Service scaled to zero is still a pool with endpoints
        "urls": list(e.urls),
        **_drop_none(
            {
                "picker": e.picker,
                "metrics": {"format": metrics.format, "path": metrics.path, "interval": metrics.interval}
                if metrics
                else None,
                "maxQueue": e.max_queue,
                "prefixChars": e.prefix_chars,
                "cooldown": e.cooldown,
            }
        ),
    }


def _backend(b: Backend) -> dict[str, Any]:
    return _drop_none({"pool": b.pool, "model": b.model, "weight": b.weight})


def _rule(r: Rule) -> dict[str, Any]:
    return _drop_none(
        {
            "models": list(r.models),
            "backends": [_backend(b) for b in r.backends],
            "fallbacks": [_backend(b) for b in r.fallbacks],
            "retry": {"attempts": r.retry.attempts, "retryOn": list(r.retry.retry_on)},
            "timeouts": _timeouts(r.timeouts),
            "guardrails": _guardrails(r.guardrails),
            "promptDecorator": _prompt_decorator(r.prompt_decorator),
            "cache": _cache(r.cache),
            "webSearch": _web_search(r.web_search),
        }
    )


def _web_search(w: WebSearch | None) -> dict[str, Any] | None:
    if w is None:
        return None
    rewrite = w.rewrite
    return _drop_none(
        {
            "enabled": w.enabled,
            "engines": [_search_engine(e) for e in w.engines],
            "maxResults": w.max_results,
            "timeout": w.timeout,
            "rewrite": None
            if rewrite is None
            else {"pool": rewrite.pool, "model": rewrite.model, "timeout": rewrite.timeout},
            "citations": w.citations,
            "failurePolicy": w.failure_policy,
            "template": w.template,
            "timeZone": w.time_zone,
        }
    )


def _search_engine(e: SearchEngine) -> dict[str, Any]:
    credentials = dict(e.credentials)
    elasticsearch = e.type == "elasticsearch"
    return _drop_none(
        {
            "type": e.type,
            "name": e.name,
            "url": e.url,
            "timeout": e.timeout,
            "credentials": credentials,
            "index": e.index,
            "matchFields": list(e.match_fields) if elasticsearch else None,
            "titleField": e.title_field if elasticsearch else None,
            "urlField": e.url_field,
            "snippetField": e.snippet_field if elasticsearch else None,
        }
    )


def _cache(c: Cache | None) -> dict[str, Any] | None:
    if c is None:
        return None
    semantic = c.semantic
    return _drop_none(
        {
            "mode": c.mode,
            "ttl": c.ttl,
            "scope": c.scope,
            "maxEntryBytes": c.max_entry_bytes,
            "cacheToolCalls": c.cache_tool_calls,
            "coalesce": c.coalesce,
            "promptCacheKey": c.prompt_cache_key,
            "semantic": None
            if semantic is None
            else {
                "embedding": _drop_none(
                    {"pool": semantic.pool, "model": semantic.model, "dimensions": semantic.dimensions}
                ),
                "threshold": semantic.threshold,
                "shadow": semantic.shadow,
            },
        }
    )


def _guardrails(g: Guardrails | None) -> dict[str, Any] | None:
    if g is None:
        return None
    return {
        "failurePolicy": g.failure_policy,
        "timeout": g.timeout,
        "stream": {"window": g.stream_window},
        "message": g.message,
        "onBlock": g.on_block,
        "checkers": [_checker(c) for c in g.checkers],
    }


def _checker(c: Checker) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "type": c.type,
        "action": c.action,
        "direction": c.direction,
        "scope": list(c.scope),
    }
    s = c.settings
    if isinstance(s, RulesSettings):
        out |= _drop_none(
            {
                "patterns": list(s.patterns),
                "keywords": list(s.keywords),
                "ignoreCase": s.ignore_case or None,
                "detectors": list(s.detectors),
                "replacement": s.replacement,
            }
        )
    elif isinstance(s, ModerationSettings):
        out |= _drop_none(
            {
                "pool": s.pool,
                "model": s.model,
                "categories": list(s.categories),
                "thresholds": dict(s.thresholds),
            }
        )
    elif isinstance(s, JudgeSettings):
        out |= _drop_none({"pool": s.pool, "model": s.model, "format": s.format, "blockOn": list(s.block_on)})
    elif isinstance(s, AliyunSettings):
        credentials = {"accessKeyId": s.access_key_id, "accessKeySecret": s.access_key_secret}
        if s.security_token:
            credentials["securityToken"] = s.security_token
        out |= _drop_none(
            {
                "region": s.region,
                "endpoint": s.endpoint,
                "riskLevel": s.risk_level,
                "adviceAsMessage": s.advice_as_message or None,
                "credentials": credentials,
            }
        )
    elif isinstance(s, WebhookSettings):
        out |= _drop_none({"url": s.url, "credentials": {"token": s.token} if s.token else None})
    return out


def _prompt_decorator(d: PromptDecorator | None) -> dict[str, Any] | None:
    if d is None:
        return None
    messages = lambda ms: [{"role": m.role, "content": m.content} for m in ms]  # noqa: E731
    return _drop_none({"prepend": messages(d.prepend), "append": messages(d.append)})


def _route(r: Route) -> dict[str, Any]:
    return _drop_none(
        {
            "name": r.name,
            "hosts": list(r.hosts),
            "pathPrefix": r.path_prefix,
            "rules": [_rule(rule) for rule in r.rules],
            "access": _drop_none(
                {"consumers": list(r.access.consumers), "selectors": [dict(s) for s in r.access.selectors]}
            ),
        }
    )


def _consumer(c: Consumer) -> dict[str, Any]:
    return _drop_none(
        {"name": c.name, "keyHashes": list(c.key_hashes), "labels": dict(c.labels), "sourceIPs": list(c.source_ips)}
    )


def _limit(lim: Limit) -> dict[str, Any]:
    return _drop_none(
        {"tokens": lim.tokens, "requests": lim.requests, "usd": lim.usd, "count": lim.count, "window": lim.window}
    )


def _rate_limit(rl: RateLimit) -> dict[str, Any]:
    return _drop_none(
        {
            "name": rl.name,
            "routes": list(rl.routes),
            "key": list(rl.key),
            "limits": [_limit(lim) for lim in rl.limits],
            "overrides": [{"match": dict(o.match), "limits": [_limit(lim) for lim in o.limits]} for o in rl.overrides],
            "message": rl.message,
            "failurePolicy": rl.failure_policy,
            "defaultMaxTokens": rl.default_max_tokens,
        }
    )


def config_body(config: GatewayConfig) -> dict[str, Any]:
    """Everything but the hash, in a deterministic order."""
    return {
        "version": config.version,
        "settings": {"maxBodyBytes": config.settings.max_body_bytes},
        "pools": [_pool(p) for p in config.pools],
        "routes": [_route(r) for r in config.routes],
        "consumers": [_consumer(c) for c in config.consumers],
        "rateLimits": [_rate_limit(rl) for rl in config.rate_limits],
    }


def content_hash(config: GatewayConfig, secrets: SecretsConfig | None = None) -> str:
    """A stable digest of the config and (when given) the key values, so a key rotation changes the hash."""
    digest = hashlib.sha256(orjson.dumps(config_body(config), option=orjson.OPT_SORT_KEYS))
    if secrets is not None:
        digest.update(orjson.dumps(dict(secrets.keys), option=orjson.OPT_SORT_KEYS))
    return "sha256:" + digest.hexdigest()[:32]


def config_to_dict(config: GatewayConfig) -> dict[str, Any]:
    return {
        "version": config.version,
        "hash": config.hash,
        **{k: v for k, v in config_body(config).items() if k != "version"},
    }


def secrets_to_dict(secrets: SecretsConfig, *, redact: bool = False) -> dict[str, Any]:
    keys = {k: ("<redacted>" if redact else v) for k, v in secrets.keys}
    return {"version": secrets.version, "hash": secrets.hash, "keys": keys}
