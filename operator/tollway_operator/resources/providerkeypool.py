"""ProviderKeyPool: one upstream LLM service and its pool of API keys, or several model servers (`endpoints`)."""

from __future__ import annotations

import datetime
from typing import Any

from tollway_contract.model import (
    DEFAULT_PREFIX_CHARS,
    METRIC_FORMATS,
    PICKERS,
    PROVIDERS,
    SELECTIONS,
    Cooldown,
    EndpointMetrics,
    Endpoints,
    Pool,
    PoolKey,
    Price,
    Timeouts,
)

from ..status import ObjectStatus
from .common import CRDoc, SpecReader, spec_of
from .endpointslice import SliceIndex
from .secret import SecretStore

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


def read_timeouts(r: SpecReader, data: Any, path: str) -> Timeouts | None:
    if data is None:
        return None
    spec = r.obj(data, path)
    return Timeouts(
        connect=r.duration(spec, "connect", path),
        first_byte=r.duration(spec, "firstByte", path),
        idle=r.duration(spec, "idle", path),
        total=r.duration(spec, "total", path),
    )


def _status_ranges(r: SpecReader, value: Any, path: str) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    out = []
    for i, item in enumerate(r.items(value, path)):
        text = str(item)
        low_s, _, high_s = text.partition("-")
        try:
            low, high = int(low_s), int(high_s or low_s)
        except ValueError:
            low, high = 0, 0
        if not (100 <= low <= high <= 599):
            r.fail(f"{path}[{i}]", f"must be an HTTP status (100-599) or a range like 500-599, got {item!r}")
            continue
        out.append((low, high))
    return tuple(out)


def compile_pool(
    doc: CRDoc, secrets: SecretStore, status: ObjectStatus, slices: SliceIndex | None = None
) -> tuple[Pool, dict[str, str]] | None:
    """The pool and its key values by key id, or None when the spec is invalid."""
    r = SpecReader()
    spec = spec_of(doc, r)
    provider = r.enum(spec, "provider", "spec", PROVIDERS, "openai")
    if "provider" not in spec:
        r.fail("spec.provider", "is required")
    endpoints = None
    if spec.get("endpoints") is not None:
        endpoints = _endpoints(doc, r, spec["endpoints"], slices or SliceIndex(), status)
    base_url = r.str_(spec, "baseURL", "spec")
    if endpoints is not None:
        if base_url is not None:
            r.fail("spec.baseURL", "cannot be combined with spec.endpoints (each endpoint is a base URL)")
        base_url = ""  # every attempt goes to the base URL of the endpoint it picks
    else:
        base_url = base_url or DEFAULT_BASE_URLS.get(provider)
    if base_url is None:
        r.fail("spec.baseURL", f"is required for provider {provider} (or spec.endpoints)")
    elif base_url and not base_url.startswith(("http://", "https://")):
        r.fail("spec.baseURL", f"must start with http:// or https://, got {base_url!r}")
    cooldown_spec = r.obj(spec.get("cooldown"), "spec.cooldown")
    defaults = Cooldown()
    statuses = _status_ranges(r, cooldown_spec.get("statuses"), "spec.cooldown.statuses")
    cooldown = Cooldown(
        default=r.duration(cooldown_spec, "default", "spec.cooldown") or defaults.default,
        max=r.duration(cooldown_spec, "max", "spec.cooldown") or defaults.max,
        statuses=statuses if statuses is not None else defaults.statuses,
    )
    azure = dict(r.obj(spec.get("azure"), "spec.azure"))
    if isinstance(azure.get("apiVersion"), datetime.date):  # YAML reads an unquoted 2024-10-21 as a date
        azure["apiVersion"] = azure["apiVersion"].isoformat()
    api_version = r.str_(azure, "apiVersion", "spec.azure")
    if provider == "azure-openai" and not api_version:
        r.fail("spec.azure.apiVersion", "is required for provider azure-openai")
    keys, values = _resolve_keys(doc, r, spec.get("keys"), secrets, status)
    status.extra["keyCount"] = len(keys)
    selection = r.enum(spec, "selection", "spec", SELECTIONS, "round-robin")
    timeouts = read_timeouts(r, spec.get("timeouts"), "spec.timeouts") or Timeouts()
    headers = r.pairs(spec, "headers", "spec")
    pricing = _pricing(r, spec.get("pricing"))
    status.invalid.extend(r.problems)  # every field is read above this line, so no problem goes unreported
    if status.rejected or base_url is None:
        return None
    pool = Pool(
        name=doc.qualified_name,
        provider=provider,
        base_url=base_url.rstrip("/"),
        keys=keys,
        selection=selection,
        cooldown=cooldown,
        timeouts=timeouts,
        headers=headers,
        azure_api_version=api_version,
        pricing=pricing,
        endpoints=endpoints,
    )
    return pool, values


def _endpoints(doc: CRDoc, r: SpecReader, value: Any, slices: SliceIndex, status: ObjectStatus) -> Endpoints:
    """spec.endpoints: the model servers (a Service's ready endpoints, or static URLs) and how one is picked."""
    path = "spec.endpoints"
    spec = r.obj(value, path)
    service = spec.get("service")
    if (service is None) == (spec.get("urls") is None):
        r.fail(path, "must set exactly one of service or urls")
    urls: tuple[str, ...] = ()
    if spec.get("urls") is not None:
        urls = r.strings(spec, "urls", path)
        for i, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):
                r.fail(f"{path}.urls[{i}]", f"must start with http:// or https://, got {url!r}")
        urls = tuple(dict.fromkeys(u.rstrip("/") for u in urls))
    elif service is not None:
        urls = _service_urls(doc, r, service, slices, status)
    status.extra["endpointCount"] = len(urls)
    metrics = None
    if spec.get("metrics") is not None:
        metrics_spec = r.obj(spec["metrics"], f"{path}.metrics")
        if "format" not in metrics_spec:
            r.fail(f"{path}.metrics.format", "is required")
        scrape_path = r.str_(metrics_spec, "path", f"{path}.metrics") or "/metrics"
        if not scrape_path.startswith("/"):
            r.fail(f"{path}.metrics.path", f"must start with '/', got {scrape_path!r}")
        interval = r.duration(metrics_spec, "interval", f"{path}.metrics", minimum=0.01, maximum=300)
        metrics = EndpointMetrics(
            format=r.enum(metrics_spec, "format", f"{path}.metrics", METRIC_FORMATS, METRIC_FORMATS[0]),
            path=scrape_path,
            interval=interval or 1.0,
        )
    defaults = Endpoints()
    return Endpoints(
        urls=urls,
        picker=r.enum(spec, "picker", path, PICKERS, defaults.picker),
        metrics=metrics,
        max_queue=r.int_(spec, "maxQueue", path, None, minimum=1),
        prefix_chars=r.int_(spec, "prefixChars", path, DEFAULT_PREFIX_CHARS, minimum=1) or DEFAULT_PREFIX_CHARS,
        cooldown=r.duration(spec, "cooldown", path) or defaults.cooldown,
    )


def _service_urls(doc: CRDoc, r: SpecReader, value: Any, slices: SliceIndex, status: ObjectStatus) -> tuple[str, ...]:
    path = "spec.endpoints.service"
    service = r.obj(value, path)
    name = r.str_(service, "name", path, required=True)
    port = service.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int | str) or port in ("", 0)):
        r.fail(f"{path}.port", f"must be a port name or number, got {port!r}")
        port = None
    scheme = r.enum(service, "scheme", path, ("http", "https"), "http")
    base_path = r.str_(service, "path", path) or "/v1"
    if not base_path.startswith("/"):
        r.fail(f"{path}.path", f"must start with '/', got {base_path!r}")
    if name is None:
        return ()
    resolved = slices.resolve(doc.namespace, name, port, scheme, base_path.rstrip("/"))
    status.unresolved.extend(resolved.unresolved)
    if not resolved.unresolved and not resolved.urls:
        status.warnings.append(f"service {name!r} has no ready endpoints: the rule's other backends serve")
    return resolved.urls


def _pricing(r: SpecReader, value: Any) -> tuple[Price, ...]:
    out = []
    for i, item in enumerate(r.items(value, "spec.pricing")):
        path = f"spec.pricing[{i}]"
        data = r.obj(item, path)
        model = r.str_(data, "model", path, required=True)
        prices: dict[str, float] = {}
        for name in ("input", "output", "cachedInput"):
            price = data.get(name)
            if price is None and name == "cachedInput":
                continue
            if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
                r.fail(f"{path}.{name}", f"must be a non-negative number (USD per million tokens), got {price!r}")
            else:
                prices[name] = float(price)
        if model is not None and "input" in prices and "output" in prices:
            out.append(Price(model, prices["input"], prices["output"], prices.get("cachedInput")))
    return tuple(out)


def _resolve_keys(
    doc: CRDoc, r: SpecReader, value: Any, secrets: SecretStore, status: ObjectStatus
) -> tuple[tuple[PoolKey, ...], dict[str, str]]:
    keys: list[PoolKey] = []
    values: dict[str, str] = {}
    for i, item in enumerate(r.items(value, "spec.keys")):
        ref = r.obj(r.obj(item, f"spec.keys[{i}]").get("secretRef"), f"spec.keys[{i}].secretRef")
        secret_name = r.str_(ref, "name", f"spec.keys[{i}].secretRef", required=True)
        data_key = r.str_(ref, "key", f"spec.keys[{i}].secretRef")
        if secret_name is None:
            continue
        data = secrets.get(doc.qualify(secret_name))
        if data is None:
            status.unresolved.append(f"secret {secret_name!r} not found")
            continue
        status.unresolved.extend(secrets.problems.get(doc.qualify(secret_name), []))
        if data_key is not None and data_key not in data:
            status.unresolved.append(f"secret {secret_name!r} has no key {data_key!r}")
            continue
        for name in [data_key] if data_key is not None else sorted(data):
            key_value = data[name].strip()
            if not key_value:
                status.unresolved.append(f"secret {secret_name!r} key {name!r} is empty")
                continue
            # The id names where the key lives, never what it is: stable across reloads and safe to log.
            key_id = f"{doc.namespace}/{secret_name}/{name}"
            if key_id not in values:
                keys.append(PoolKey(id=key_id))
                values[key_id] = key_value
    return tuple(keys), values
