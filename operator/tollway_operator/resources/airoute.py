"""AIRoute: one OpenAI-compatible entry point; the request's model picks a rule, the rule picks backends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tollway_contract.guardrails import read_guardrails
from tollway_contract.load import read_cache, read_prompt_decorator, read_web_search
from tollway_contract.model import RETRY_CONDITIONS, Access, Backend, Retry, Route, Rule

from ..status import ObjectStatus
from .common import CRDoc, SpecReader, spec_of
from .consumer import NAMESPACE_LABEL
from .providerkeypool import read_timeouts
from .secret import SecretStore
from .stagerefs import SpecResolver

# Stage settings (DESIGN section 7): the spec field, the contract Rule's field, and the reader. Each applies to
# every rule of the route; a rule that sets the same field replaces it for its models. A reader gets the spec's
# resolver for what the setting refers to (durations, pools, Secrets).
StageReader = Callable[[SpecReader, Any, str, SpecResolver], Any]
_STAGE_FIELDS: tuple[tuple[str, str, StageReader], ...] = (
    ("guardrails", "guardrails", read_guardrails),
    ("promptDecorator", "prompt_decorator", lambda r, value, path, _: read_prompt_decorator(r, value, path)),
    ("cache", "cache", read_cache),
    ("webSearch", "web_search", read_web_search),
)


def compile_route(
    doc: CRDoc,
    pools: Mapping[str, str],
    rejected_pools: Collection[str],
    consumers: Collection[str],
    status: ObjectStatus,
    secrets: SecretStore | None = None,
    secret_values: dict[str, str] | None = None,
) -> Route | None:
    """The route, or None when its spec is invalid. `pools` maps accepted pools to their provider; credential
    values that stage settings reference go into `secret_values` (for the secrets document)."""
    r = SpecReader()
    resolver = SpecResolver(doc, pools, rejected_pools, secrets or SecretStore(), status)
    spec = spec_of(doc, r)
    match = r.obj(spec.get("match"), "spec.match")
    prefix = r.str_(match, "pathPrefix", "spec.match") or "/v1"
    if not prefix.startswith("/"):
        r.fail("spec.match.pathPrefix", f"must start with '/', got {prefix!r}")
    rules_data = r.items(spec.get("rules"), "spec.rules")
    if not rules_data:
        r.fail("spec.rules", "must hold at least one rule")
    route_stages = _stages(r, spec, "spec", resolver)
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(rules_data):
        path = f"spec.rules[{i}]"
        data = r.obj(item, path)
        rule = _rule(doc, r, data, path, pools, rejected_pools, status)
        if rule is None:
            continue
        rule = dataclasses.replace(rule, **(route_stages | _stages(r, data, path, resolver)))
        for model in rule.models:
            if model in first_seen:
                r.fail(f"{path}.models", f"model {model!r} is already matched by spec.rules[{first_seen[model]}]")
            first_seen.setdefault(model, i)
        rules.append(rule)
    access = _access(doc, r, r.obj(spec.get("access"), "spec.access"), consumers, status)
    status.extra["models"] = sorted(first_seen)
    status.extra["modelsSummary"] = ",".join(sorted(first_seen))[:200]
    hosts = tuple(sorted({h.lower() for h in r.strings(match, "hosts", "spec.match")}))
    status.invalid.extend(r.problems)  # every field is read above this line
    if status.rejected:
        return None
    if secret_values is not None:
        secret_values.update(resolver.values)
    return Route(
        name=doc.qualified_name,
        rules=tuple(rules),
        hosts=hosts,
        path_prefix=prefix.rstrip("/") or "/",
        access=access,
    )


def _rule(
    doc: CRDoc,
    r: SpecReader,
    data: dict[str, Any],
    path: str,
    pools: Collection[str],
    rejected_pools: Collection[str],
    status: ObjectStatus,
) -> Rule | None:
    models = r.strings(data, "models", path)
    if not models:
        r.fail(f"{path}.models", "must name at least one model")
    backends = _backends(doc, r, data.get("backends"), f"{path}.backends", pools, rejected_pools, status)
    declared = r.items(data.get("backends"), f"{path}.backends")
    if not declared:
        r.fail(f"{path}.backends", "must hold at least one backend")
    elif all(isinstance(b, dict) and b.get("weight", 1) == 0 for b in declared):
        r.fail(f"{path}.backends", "needs at least one backend with a positive weight")
    fallbacks = _backends(doc, r, data.get("fallbacks"), f"{path}.fallbacks", pools, rejected_pools, status)
    retry_data = r.obj(data.get("retry"), f"{path}.retry")
    attempts = r.int_(retry_data, "attempts", f"{path}.retry", Retry().attempts)
    if attempts is not None and attempts > 10:
        r.fail(f"{path}.retry.attempts", f"must be at most 10, got {attempts}")
    if True in retry_data or "on" in retry_data or "true" in retry_data:
        # YAML 1.1 (kubectl included) reads a bare `on:` key as the boolean true.
        r.fail(f"{path}.retry", "unknown field 'on' (YAML reads it as true): the field is retryOn")
    retry_on = r.strings(retry_data, "retryOn", f"{path}.retry") if "retryOn" in retry_data else Retry().retry_on
    for j, cond in enumerate(retry_on):
        if cond not in RETRY_CONDITIONS:
            r.fail(f"{path}.retry.retryOn[{j}]", f"must be one of {', '.join(RETRY_CONDITIONS)}; got {cond!r}")
    if not models:
        return None
    return Rule(
        models=models,
        backends=backends,
        fallbacks=fallbacks,
        retry=Retry(attempts=attempts if attempts is not None else 0, retry_on=retry_on),
        timeouts=read_timeouts(r, data.get("timeouts"), f"{path}.timeouts"),
    )


def _stages(r: SpecReader, data: dict[str, Any], path: str, resolver: SpecResolver) -> dict[str, Any]:
    """The stage settings `data` sets, as contract Rule fields."""
    return {
        attribute: reader(r, data[name], f"{path}.{name}", resolver)
        for name, attribute, reader in _STAGE_FIELDS
        if data.get(name) is not None
    }


def _backends(
    doc: CRDoc,
    r: SpecReader,
    value: Any,
    path: str,
    pools: Collection[str],
    rejected_pools: Collection[str],
    status: ObjectStatus,
) -> tuple[Backend, ...]:
    out = []
    for i, item in enumerate(r.items(value, path)):
        data = r.obj(item, f"{path}[{i}]")
        pool = r.str_(data, "pool", f"{path}[{i}]", required=True)
        weight = r.int_(data, "weight", f"{path}[{i}]", 1)
        if pool is None:
            continue
        qualified = doc.qualify(pool)
        if qualified in rejected_pools:
            status.unresolved.append(f"pool {pool!r} is not accepted (see its status)")
        elif qualified not in pools:
            status.unresolved.append(f"pool {pool!r} not found")
        else:
            out.append(Backend(pool=qualified, model=r.str_(data, "model", f"{path}[{i}]"), weight=weight or 0))
    return tuple(out)


def _access(
    doc: CRDoc, r: SpecReader, data: dict[str, Any], consumers: Collection[str], status: ObjectStatus
) -> Access:
    names = r.strings(data, "consumers", "spec.access")
    for name in names:
        if doc.qualify(name) not in consumers:
            status.unresolved.append(f"consumer {name!r} not found")
    selector = r.obj(data.get("consumerSelector"), "spec.access.consumerSelector")
    match_labels = r.pairs(selector, "matchLabels", "spec.access.consumerSelector")
    selectors: tuple[tuple[tuple[str, str], ...], ...] = ()
    if match_labels:
        selectors = (tuple(sorted((*match_labels, (NAMESPACE_LABEL, doc.namespace)))),)
    return Access(consumers=tuple(sorted(doc.qualify(n) for n in set(names))), selectors=selectors)
