"""AIRoute: one OpenAI-compatible entry point; the request's model picks a rule, the rule picks backends."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from tollway_contract.load import read_cache, read_prompt_decorator, read_web_search
from tollway_contract.model import RETRY_CONDITIONS, Access, Backend, Cache, Retry, Route, Rule, SearchEngine, WebSearch

from ..status import ObjectStatus
from .common import CRDoc, SpecReader, spec_of
from .consumer import NAMESPACE_LABEL
from .providerkeypool import read_timeouts
from .secret import SecretStore

# Spec fields of later features: accepted by the schema, not yet acted on; say so in the status.
_RESERVED = ("guardrails",)

# Stage settings (DESIGN section 7): the spec field, the contract Rule's field, the reader, and what turns
# same-namespace references (pools) into the config's names. Each applies to every rule of the route; a rule that
# sets the same field replaces it for its models.
StageReader = Callable[[SpecReader, Any, str], Any]


@dataclass(frozen=True)
class Refs:
    """Resolves what a stage's settings reference, recording what does not resolve in the route's status.

    Secret references become ids (`namespace/secret/key`, like pool keys: they name where a value lives, never
    what it is) and their values are collected in `values`, which the compiler puts in the secrets document
    when the route is accepted. `path` is the spec field being resolved, so a problem names it."""

    doc: CRDoc
    pools: Collection[str]
    rejected_pools: Collection[str]
    status: ObjectStatus
    secrets: SecretStore = dataclasses.field(default_factory=SecretStore)
    values: dict[str, str] = dataclasses.field(default_factory=dict)
    path: str = "spec"

    def pool(self, name: str) -> str:
        qualified = self.doc.qualify(name)
        if qualified in self.rejected_pools:
            self.status.unresolved.append(f"pool {name!r} is not accepted (see its status)")
        elif qualified not in self.pools:
            self.status.unresolved.append(f"pool {name!r} not found")
        return qualified

    def secret(self, name: str, key: str, field: str) -> str:
        """The id of the Secret's data key; its value is recorded when it exists (else the status says why)."""
        secret_id = f"{self.doc.namespace}/{name}/{key}"
        data = self.secrets.get(self.doc.qualify(name))
        where = f"{self.path}.{field}"
        if data is None:
            self.status.unresolved.append(f"{where}: secret {name!r} not found")
        elif key not in data:
            self.status.unresolved.append(f"{where}: secret {name!r} has no key {key!r}")
        elif not data[key].strip():
            self.status.unresolved.append(f"{where}: secret {name!r} key {key!r} is empty")
        else:
            self.status.unresolved.extend(self.secrets.problems.get(self.doc.qualify(name), []))
            self.values[secret_id] = data[key].strip()
        return secret_id


def _no_refs(value: Any, refs: Refs) -> Any:
    return value


def _cache_refs(cache: Cache, refs: Refs) -> Cache:
    if cache.semantic is None:
        return cache
    return dataclasses.replace(cache, semantic=dataclasses.replace(cache.semantic, pool=refs.pool(cache.semantic.pool)))


def _web_search_refs(search: WebSearch, refs: Refs) -> WebSearch:
    rewrite = search.rewrite
    if rewrite is not None:
        rewrite = dataclasses.replace(rewrite, pool=refs.pool(rewrite.pool))
    engines = tuple(_engine_refs(engine, i, refs) for i, engine in enumerate(search.engines))
    return dataclasses.replace(search, rewrite=rewrite, engines=engines)


def _engine_refs(engine: SearchEngine, index: int, refs: Refs) -> SearchEngine:
    ref = engine.secret_ref
    if ref is None:
        return engine
    field = f"engines[{index}].credentials.secretRef"
    credentials = {"apiKey": refs.secret(ref.name, ref.key or "apiKey", field)}
    if engine.type == "google":  # the search engine id travels with the key, in the same Secret
        credentials["cx"] = refs.secret(ref.name, "cx", field)
    return dataclasses.replace(engine, secret_ref=None, credentials=tuple(sorted(credentials.items())))


_STAGE_FIELDS: tuple[tuple[str, str, StageReader, Callable[[Any, Refs], Any]], ...] = (
    ("promptDecorator", "prompt_decorator", read_prompt_decorator, _no_refs),
    ("cache", "cache", read_cache, _cache_refs),
    ("webSearch", "web_search", read_web_search, _web_search_refs),
)


def compile_route(
    doc: CRDoc,
    pools: Collection[str],
    rejected_pools: Collection[str],
    consumers: Collection[str],
    status: ObjectStatus,
    secrets: SecretStore | None = None,
    secret_values: dict[str, str] | None = None,
) -> Route | None:
    """The route, or None when it is rejected. The values of the Secrets its stages reference (search engine
    keys) are added to `secret_values` for an accepted route only."""
    r = SpecReader()
    spec = spec_of(doc, r)
    match = r.obj(spec.get("match"), "spec.match")
    prefix = r.str_(match, "pathPrefix", "spec.match") or "/v1"
    if not prefix.startswith("/"):
        r.fail("spec.match.pathPrefix", f"must start with '/', got {prefix!r}")
    rules_data = r.items(spec.get("rules"), "spec.rules")
    if not rules_data:
        r.fail("spec.rules", "must hold at least one rule")
    refs = Refs(doc, pools, rejected_pools, status, secrets if secrets is not None else SecretStore())
    route_stages = _stages(r, spec, "spec", refs)
    rules: list[Rule] = []
    first_seen: dict[str, int] = {}
    for i, item in enumerate(rules_data):
        path = f"spec.rules[{i}]"
        data = r.obj(item, path)
        rule = _rule(doc, r, data, path, pools, rejected_pools, status)
        if rule is None:
            continue
        rule = dataclasses.replace(rule, **(route_stages | _stages(r, data, path, refs)))
        for model in rule.models:
            if model in first_seen:
                r.fail(f"{path}.models", f"model {model!r} is already matched by spec.rules[{first_seen[model]}]")
            first_seen.setdefault(model, i)
        rules.append(rule)
    access = _access(doc, r, r.obj(spec.get("access"), "spec.access"), consumers, status)
    for field in _RESERVED:
        if spec.get(field):
            status.warnings.append(f"spec.{field} is not implemented yet and has no effect")
    status.extra["models"] = sorted(first_seen)
    status.extra["modelsSummary"] = ",".join(sorted(first_seen))[:200]
    hosts = tuple(sorted({h.lower() for h in r.strings(match, "hosts", "spec.match")}))
    status.invalid.extend(r.problems)  # every field is read above this line
    if status.rejected:
        return None
    if secret_values is not None:
        secret_values.update(refs.values)
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


def _stages(r: SpecReader, data: dict[str, Any], path: str, refs: Refs) -> dict[str, Any]:
    """The stage settings `data` sets, as contract Rule fields (references resolved)."""
    out = {}
    for name, attribute, reader, resolve in _STAGE_FIELDS:
        if data.get(name) is not None:
            value = reader(r, data[name], f"{path}.{name}")
            field_refs = dataclasses.replace(refs, path=f"{path}.{name}")  # shares `values` with `refs`
            out[attribute] = resolve(value, field_refs) if value is not None else None
    return out


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
