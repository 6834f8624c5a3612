"""TokenRateLimit: token, request and money (USD) budgets per consumer, key, route, model, source IP or header."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from tollway_contract.model import (
    DEFAULT_LIMIT_MESSAGE,
    FAILURE_POLICIES,
    LIMIT_COUNTS,
    Limit,
    LimitOverride,
    Pool,
    RateLimit,
    Route,
)
from tollway_contract.prices import MAX_USD, unpriced

from ..status import ObjectStatus
from .common import CRDoc, SpecReader, spec_of

KEY_PARTS = ("consumer", "apiKey", "route", "model", "sourceIP")
_HEADER_PART = re.compile(r"^header:[A-Za-z0-9-]+$")
MIN_WINDOW = 1.0
MAX_WINDOW = 30 * 86400.0


def compile_rate_limit(doc: CRDoc, routes_in_namespace: Collection[str], status: ObjectStatus) -> RateLimit | None:
    r = SpecReader()
    spec = spec_of(doc, r)
    key = _key(r, spec.get("key", "consumer"))
    limits = _limits(r, spec.get("limits"), "spec.limits")
    if not limits and not any(p.startswith("spec.limits") for p in r.problems):
        r.fail("spec.limits", "must hold at least one limit")
    overrides = []
    for i, item in enumerate(r.items(spec.get("overrides"), "spec.overrides")):
        path = f"spec.overrides[{i}]"
        data = r.obj(item, path)
        match = r.pairs(data, "match", path)
        if not match:
            r.fail(f"{path}.match", "must name at least one key part")
        for part, _ in match:
            if part not in key:
                r.fail(f"{path}.match.{part}", f"is not a part of this limit's key ({'+'.join(key)})")
        override_limits = _limits(r, data.get("limits"), f"{path}.limits")
        if not override_limits:
            r.fail(f"{path}.limits", "must hold at least one limit")
        # Consumer and route names are namespaced in the config; a bare name means this namespace's.
        qualified = tuple(
            (part, doc.qualify(value) if part in ("consumer", "route") and "/" not in value else value)
            for part, value in match
        )
        overrides.append(LimitOverride(match=qualified, limits=override_limits))
    routes = _targets(doc, r, spec.get("targetRefs"), routes_in_namespace, status)
    estimate = r.obj(spec.get("estimate"), "spec.estimate")
    default_max_tokens = r.int_(estimate, "defaultMaxTokens", "spec.estimate", 1024, minimum=1) or 1024
    status.extra["limitsSummary"] = ", ".join(_describe(lim) for lim in limits)
    message = r.str_(spec, "message", "spec") or DEFAULT_LIMIT_MESSAGE
    failure_policy = r.enum(spec, "failurePolicy", "spec", FAILURE_POLICIES, "open")
    status.invalid.extend(r.problems)  # every field is read above this line
    if status.rejected:
        return None
    return RateLimit(
        name=doc.qualified_name,
        routes=routes,
        key=key,
        limits=limits,
        overrides=tuple(overrides),
        message=message,
        failure_policy=failure_policy,
        default_max_tokens=default_max_tokens,
    )


def _key(r: SpecReader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        r.fail("spec.key", f"must be a string such as 'consumer' or 'consumer+model', got {value!r}")
        return ("consumer",)
    parts = tuple(value.split("+"))
    for part in parts:
        if part not in KEY_PARTS and not _HEADER_PART.match(part):
            r.fail("spec.key", f"unknown key part {part!r}: use {', '.join(KEY_PARTS)} or header:<Name>")
    if len(set(parts)) != len(parts):
        r.fail("spec.key", f"repeats a part: {value!r}")
    return parts


def _limits(r: SpecReader, value: Any, path: str) -> tuple[Limit, ...]:
    out = []
    for i, item in enumerate(r.items(value, path)):
        item_path = f"{path}[{i}]"
        data = r.obj(item, item_path)
        window = r.duration(data, "window", item_path, minimum=MIN_WINDOW, maximum=MAX_WINDOW)
        if "window" not in data:
            r.fail(f"{item_path}.window", "is required")
        tokens = r.int_(data, "tokens", item_path, None, minimum=1)
        requests = r.int_(data, "requests", item_path, None, minimum=1)
        usd = _usd(r, data, item_path)
        if sum(k in data for k in ("tokens", "requests", "usd")) != 1:
            r.fail(item_path, "must set exactly one of tokens, requests or usd")
        count = r.enum(data, "count", item_path, LIMIT_COUNTS, "total")
        if count != "total" and "tokens" not in data:
            r.fail(f"{item_path}.count", "applies to token limits only")
        if window is not None and (tokens is not None or requests is not None or usd is not None):
            out.append(Limit(window=window, tokens=tokens, requests=requests, usd=usd, count=count))
    return tuple(out)


def _usd(r: SpecReader, data: dict[str, Any], path: str) -> float | None:
    value = data.get("usd")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_USD:
        r.fail(f"{path}.usd", f"must be a number of US dollars above 0 and at most {MAX_USD:g}, got {value!r}")
        return None
    return float(value)


def check_prices(rate_limit: RateLimit, routes: Mapping[str, Route], pools: Mapping[str, Pool]) -> list[str]:
    """A money budget needs a price for every model its routes may serve: one problem per unpriced model."""
    if not rate_limit.has_usd:
        return []
    return [
        f"spec.limits: a usd limit needs a price for every model it may serve, but {problem}"
        for name in rate_limit.routes
        if name in routes
        for problem in unpriced(routes[name], pools)
    ]


def _targets(
    doc: CRDoc, r: SpecReader, value: Any, routes_in_namespace: Collection[str], status: ObjectStatus
) -> tuple[str, ...]:
    refs = r.items(value, "spec.targetRefs")
    if not refs:
        return tuple(sorted(routes_in_namespace))
    out = set()
    for i, item in enumerate(refs):
        data = r.obj(item, f"spec.targetRefs[{i}]")
        kind = data.get("kind", "AIRoute")
        if kind != "AIRoute":
            r.fail(f"spec.targetRefs[{i}].kind", f"must be AIRoute, got {kind!r}")
        name = r.str_(data, "name", f"spec.targetRefs[{i}]", required=True)
        if name is None:
            continue
        if doc.qualify(name) not in routes_in_namespace:
            status.unresolved.append(f"AIRoute {name!r} not found or not accepted")
        out.add(doc.qualify(name))
    return tuple(sorted(out))


def _describe(limit: Limit) -> str:
    window = f"{limit.window:g}s"
    if limit.usd is not None:
        what = f"${limit.usd:g}"
    elif limit.tokens is not None:
        what = f"{limit.tokens} tokens" if limit.count == "total" else f"{limit.tokens} {limit.count} tokens"
    else:
        what = f"{limit.requests} requests"
    return f"{what}/{window}"
