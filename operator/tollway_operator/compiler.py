"""The compiler: custom resources + Secrets -> GatewayConfig + per-object status. Pure and deterministic.

The same function serves the operator (objects from the API server), `tollway run --crs DIR` and
`tollway render` (objects from files), so what a user tests locally is what the cluster serves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tollway_contract.dump import content_hash
from tollway_contract.model import Consumer, GatewayConfig, Pool, RateLimit, Route, SecretsConfig

from .resources.airoute import compile_route
from .resources.common import API_VERSION, GROUP, KINDS, CRDoc
from .resources.consumer import CredentialRequest, compile_consumer
from .resources.endpointslice import API_VERSION as SLICE_API_VERSION
from .resources.endpointslice import SliceIndex
from .resources.providerkeypool import compile_pool
from .resources.secret import SecretStore
from .resources.tokenratelimit import check_prices, compile_rate_limit
from .status import ObjectRef, ObjectStatus


@dataclass
class CompileResult:
    config: GatewayConfig
    secrets: SecretsConfig
    statuses: dict[ObjectRef, ObjectStatus]
    to_generate: list[CredentialRequest] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # documents that are not ours, with the reason
    services: frozenset[tuple[str, str]] = frozenset()  # (namespace, name) of the Services pools take endpoints from

    @property
    def hash(self) -> str:
        return self.config.hash


def compile_crs(documents: Iterable[dict[str, Any]]) -> CompileResult:
    by_kind: dict[str, list[CRDoc]] = {kind: [] for kind in (*KINDS, "Secret", "EndpointSlice")}
    ignored: list[str] = []
    for raw in documents:
        if not isinstance(raw, dict):
            continue
        doc = CRDoc.from_dict(raw)
        api_version = str(raw.get("apiVersion", ""))
        if doc.kind == "Secret" and api_version == "v1":
            by_kind["Secret"].append(doc)
        elif doc.kind == "EndpointSlice" and api_version == SLICE_API_VERSION:
            by_kind["EndpointSlice"].append(doc)
        elif doc.kind in KINDS and api_version.startswith(f"{GROUP}/"):
            if api_version != API_VERSION:
                ignored.append(f"{doc.ref}: unsupported apiVersion {api_version} (this compiler reads {API_VERSION})")
            elif not doc.name:
                ignored.append(f"a {doc.kind} without metadata.name")
            else:
                by_kind[doc.kind].append(doc)
        else:
            ignored.append(f"{doc.kind or 'a document without kind'} {doc.qualified_name}: not a Tollway resource")
    for docs in by_kind.values():
        docs.sort(key=lambda d: (d.namespace, d.name))

    statuses: dict[ObjectRef, ObjectStatus] = {}
    secrets = SecretStore(by_kind["Secret"])
    slices = SliceIndex(by_kind["EndpointSlice"])

    pools: list[Pool] = []
    key_values: dict[str, str] = {}
    rejected_pools: set[str] = set()
    for doc in _unique(by_kind["ProviderKeyPool"], statuses):
        compiled = compile_pool(doc, secrets, statuses[doc.ref], slices)
        if compiled is None:
            rejected_pools.add(doc.qualified_name)
            continue
        pools.append(compiled[0])
        key_values.update(compiled[1])

    to_generate: list[CredentialRequest] = []
    consumers: list[Consumer] = []
    for doc in _unique(by_kind["Consumer"], statuses):
        consumer = compile_consumer(doc, secrets, statuses[doc.ref], to_generate)
        if consumer is not None:
            consumers.append(consumer)
    consumers = _drop_shared_keys(consumers, statuses)

    pool_providers = {p.name: p.provider for p in pools}
    consumer_names = {c.name for c in consumers}
    routes: list[Route] = []
    for doc in _unique(by_kind["AIRoute"], statuses):
        # Credentials that stage settings name travel in the secrets document, beside the pools' keys.
        route = compile_route(
            doc, pool_providers, rejected_pools, consumer_names, statuses[doc.ref], secrets, key_values
        )
        if route is not None:
            routes.append(route)
    _report_shadowed_models(routes, statuses)

    rate_limits: list[RateLimit] = []
    routes_by_name = {r.name: r for r in routes}
    pools_by_name = {p.name: p for p in pools}
    for doc in _unique(by_kind["TokenRateLimit"], statuses):
        in_namespace = [r.name for r in routes if r.name.startswith(f"{doc.namespace}/")]
        limit = compile_rate_limit(doc, in_namespace, statuses[doc.ref])
        problems = check_prices(limit, routes_by_name, pools_by_name) if limit is not None else []
        statuses[doc.ref].invalid.extend(problems)
        if limit is not None and not problems:
            rate_limits.append(limit)

    config = GatewayConfig(
        pools=tuple(pools), routes=tuple(routes), consumers=tuple(consumers), rate_limits=tuple(rate_limits)
    )
    secret_config = SecretsConfig(keys=tuple(sorted(key_values.items())))
    digest = content_hash(config, secret_config)
    return CompileResult(
        config=dataclasses.replace(config, hash=digest),
        secrets=dataclasses.replace(secret_config, hash=digest),
        statuses=statuses,
        to_generate=to_generate,
        ignored=ignored,
        services=frozenset(_named_services(by_kind["ProviderKeyPool"])),
    )


def _named_services(pools: list[CRDoc]) -> Iterable[tuple[str, str]]:
    """The Services pools take endpoints from (valid or not: a pool being fixed still wants its slices)."""
    for doc in pools:
        spec = doc.body.get("spec")
        endpoints = spec.get("endpoints") if isinstance(spec, dict) else None
        service = endpoints.get("service") if isinstance(endpoints, dict) else None
        if isinstance(service, dict) and isinstance(service.get("name"), str):
            yield doc.namespace, service["name"]


def _unique(docs: list[CRDoc], statuses: dict[ObjectRef, ObjectStatus]) -> Iterable[CRDoc]:
    """Each object once (a directory may hold the same object twice: the later file wins, as with kubectl)."""
    latest: dict[ObjectRef, CRDoc] = {}
    for doc in docs:
        latest[doc.ref] = doc
    for ref, doc in latest.items():
        statuses[ref] = doc.new_status()
        yield doc


def _drop_shared_keys(consumers: list[Consumer], statuses: dict[ObjectRef, ObjectStatus]) -> list[Consumer]:
    """A key must identify one consumer; a key claimed twice stays with the first consumer (by name) only."""
    owner: dict[str, str] = {}
    out = []
    for consumer in consumers:
        kept = []
        for key_hash in consumer.key_hashes:
            if key_hash in owner:
                namespace, name = consumer.name.split("/", 1)
                statuses[ObjectRef("Consumer", namespace, name)].unresolved.append(
                    f"an API key is also used by consumer {owner[key_hash]}; it is ignored here"
                )
                continue
            owner[key_hash] = consumer.name
            kept.append(key_hash)
        out.append(dataclasses.replace(consumer, key_hashes=tuple(kept)))
    return out


def _report_shadowed_models(routes: list[Route], statuses: dict[ObjectRef, ObjectStatus]) -> None:
    """Two routes on the same host and prefix that claim the same exact model: the first by name serves it."""
    claimed: dict[tuple[str, str, str], str] = {}
    for route in routes:
        for host in route.hosts or ("*",):
            for rule in route.rules:
                for model in rule.models:
                    slot = (host, route.path_prefix, model)
                    if slot in claimed and claimed[slot] != route.name:
                        namespace, name = route.name.split("/", 1)
                        statuses[ObjectRef("AIRoute", namespace, name)].warnings.append(
                            f"model {model!r} is also claimed by route {claimed[slot]}, which takes precedence"
                        )
                    claimed.setdefault(slot, route.name)


def load_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every YAML/JSON document in the given files and directories (recursively, sorted for determinism)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file()))
        else:
            files.append(path)
    documents: list[dict[str, Any]] = []
    for file in files:
        try:
            documents.extend(d for d in yaml.safe_load_all(file.read_text("utf-8")) if isinstance(d, dict))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{file}: cannot read: {exc}") from None
    return documents
