"""Serialise the contract to plain data (the exact shape `load` reads) and compute its content hash."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from .model import (
    Backend,
    Consumer,
    Endpoints,
    GatewayConfig,
    Limit,
    Pool,
    PromptDecorator,
    RateLimit,
    Route,
    Rule,
    SecretsConfig,
    Timeouts,
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
            "promptDecorator": _prompt_decorator(r.prompt_decorator),
        }
    )


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
    return _drop_none({"tokens": lim.tokens, "requests": lim.requests, "count": lim.count, "window": lim.window})


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
