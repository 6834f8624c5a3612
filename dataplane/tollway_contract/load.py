"""Parse and validate config documents (JSON or YAML) into the typed contract.

Every problem is reported with the path of the offending field, e.g. `routes[0].rules[1].backends[0].pool: ...`,
and all problems are collected before failing, so one reload attempt tells the whole story.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .guardrails import read_guardrails
from .model import (
    CACHE_MODES,
    CACHE_SCOPES,
    DECORATOR_ROLES,
    DEFAULT_LIMIT_MESSAGE,
    DEFAULT_MAX_BODY_BYTES,
    FAILURE_POLICIES,
    LIMIT_COUNTS,
    METRIC_FORMATS,
    PICKERS,
    PROVIDERS,
    RETRY_CONDITIONS,
    SCHEMA_VERSION,
    SEARCH_CITATIONS,
    SEARCH_ENGINES,
    SEARCH_KEYED_ENGINES,
    SEARCH_MODES,
    SEARCH_TEMPLATE_VARIABLES,
    SELECTIONS,
    Access,
    Backend,
    Cache,
    Consumer,
    Cooldown,
    DecoratorMessage,
    EndpointMetrics,
    Endpoints,
    GatewayConfig,
    Limit,
    LimitOverride,
    Pool,
    PoolKey,
    Price,
    PromptDecorator,
    RateLimit,
    Retry,
    Route,
    Rule,
    SearchEngine,
    SearchRewrite,
    SecretsConfig,
    SemanticCache,
    Settings,
    Timeouts,
    WebSearch,
)
from .prices import MAX_USD, unpriced
from .reader import ConfigError, FieldReader
from .reader import join_path as _join
from .references import RENDERED, Resolver
from .templates import TemplateError, parse_template


def _timeouts(r: FieldReader, data: dict[str, Any], path: str) -> Timeouts:
    return Timeouts(
        connect=r.seconds(data, "connect", path, None),
        first_byte=r.seconds(data, "firstByte", path, None),
        idle=r.seconds(data, "idle", path, None),
        total=r.seconds(data, "total", path, None),
    )


def _status_ranges(r: FieldReader, value: Any, path: str) -> tuple[tuple[int, int], ...]:
    out = []
    for i, item in enumerate(r.items(value, path)):
        low_high = item if isinstance(item, list) and len(item) == 2 else [item, item]
        low, high = low_high
        if not all(isinstance(x, int) and not isinstance(x, bool) and 100 <= x <= 599 for x in (low, high)):
            r.fail(f"{path}[{i}]", f"must be an HTTP status or a [low, high] range, got {item!r}")
            continue
        out.append((low, high))
    return tuple(out)


def _pool(r: FieldReader, data: dict[str, Any], path: str) -> Pool | None:
    name = r.str_(data, "name", path, required=True)
    provider = r.enum(data, "provider", path, PROVIDERS, "openai")
    endpoints = None if data.get("endpoints") is None else _endpoints(r, data["endpoints"], _join(path, "endpoints"))
    # A pool with endpoints sends each attempt to the base URL of the endpoint it picks: no baseURL of its own.
    base_url = r.str_(data, "baseURL", path, required=endpoints is None)
    if endpoints is not None:
        if base_url:
            r.fail(_join(path, "baseURL"), "cannot be combined with endpoints (each endpoint is a base URL)")
        base_url = ""
    if base_url and not base_url.startswith(("http://", "https://")):
        r.fail(_join(path, "baseURL"), f"must start with http:// or https://, got {base_url!r}")
    keys = r.each(data.get("keys"), _join(path, "keys"), lambda d, p: _pool_key(r, d, p))
    cooldown_data = r.obj(data.get("cooldown"), _join(path, "cooldown"))
    defaults = Cooldown()
    cooldown = Cooldown(
        default=r.seconds(cooldown_data, "default", _join(path, "cooldown"), defaults.default) or defaults.default,
        max=r.seconds(cooldown_data, "max", _join(path, "cooldown"), defaults.max) or defaults.max,
        statuses=_status_ranges(r, cooldown_data["statuses"], _join(path, "cooldown.statuses"))
        if "statuses" in cooldown_data
        else defaults.statuses,
    )
    azure = r.obj(data.get("azure"), _join(path, "azure"))
    api_version = r.str_(azure, "apiVersion", _join(path, "azure"))
    if provider == "azure-openai" and not api_version:
        r.fail(_join(path, "azure.apiVersion"), "is required for provider azure-openai")
    if name is None or base_url is None:
        return None
    return Pool(
        name=name,
        provider=provider,
        base_url=base_url.rstrip("/"),
        keys=keys,
        selection=r.enum(data, "selection", path, SELECTIONS, "round-robin"),
        cooldown=cooldown,
        timeouts=_timeouts(r, r.obj(data.get("timeouts"), _join(path, "timeouts")), _join(path, "timeouts")),
        headers=r.pairs(data, "headers", path),
        azure_api_version=api_version,
        pricing=r.each(data.get("pricing"), _join(path, "pricing"), lambda d, p: _price(r, d, p)),
        endpoints=endpoints,
    )


def _endpoints(r: FieldReader, value: Any, path: str) -> Endpoints:
    data = r.obj(value, path)
    urls = r.strings(data, "urls", path)
    for i, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            r.fail(f"{path}.urls[{i}]", f"must start with http:// or https://, got {url!r}")
    metrics = None
    if data.get("metrics") is not None:
        metrics_path = _join(path, "metrics")
        metrics_data = r.obj(data["metrics"], metrics_path)
        scrape_path = r.str_(metrics_data, "path", metrics_path) or "/metrics"
        if not scrape_path.startswith("/"):
            r.fail(_join(metrics_path, "path"), f"must start with '/', got {scrape_path!r}")
        if "format" not in metrics_data:
            r.fail(_join(metrics_path, "format"), "is required")
        metrics = EndpointMetrics(
            format=r.enum(metrics_data, "format", metrics_path, METRIC_FORMATS, METRIC_FORMATS[0]),
            path=scrape_path,
            interval=r.seconds(metrics_data, "interval", metrics_path, 1.0) or 1.0,
        )
    defaults = Endpoints()
    return Endpoints(
        urls=tuple(dict.fromkeys(u.rstrip("/") for u in urls)),
        picker=r.enum(data, "picker", path, PICKERS, defaults.picker),
        metrics=metrics,
        max_queue=r.int_(data, "maxQueue", path, None, minimum=1),
        prefix_chars=r.int_(data, "prefixChars", path, defaults.prefix_chars, minimum=1) or defaults.prefix_chars,
        cooldown=r.seconds(data, "cooldown", path, defaults.cooldown) or defaults.cooldown,
    )


def _price(r: FieldReader, data: dict[str, Any], path: str) -> Price | None:
    model = r.str_(data, "model", path, required=True)
    values = {}
    for name in ("input", "output", "cachedInput"):
        value = data.get(name)
        if value is None and name == "cachedInput":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            r.fail(_join(path, name), f"must be a non-negative number of USD per million tokens, got {value!r}")
            return None
        values[name] = float(value)
    if model is None:
        return None
    return Price(model=model, input=values["input"], output=values["output"], cached_input=values.get("cachedInput"))


def _pool_key(r: FieldReader, data: dict[str, Any], path: str) -> PoolKey | None:
    key_id = r.str_(data, "id", path, required=True)
    return PoolKey(id=key_id) if key_id else None


def _backend(r: FieldReader, data: dict[str, Any], path: str) -> Backend | None:
    pool = r.str_(data, "pool", path, required=True)
    weight = r.int_(data, "weight", path, 1)
    if pool is None:
        return None
    return Backend(pool=pool, model=r.str_(data, "model", path), weight=weight if weight is not None else 1)


def _rule(r: FieldReader, data: dict[str, Any], path: str) -> Rule | None:
    models = r.strings(data, "models", path)
    if not models:
        r.fail(_join(path, "models"), "must name at least one model")
    backends = r.each(data.get("backends"), _join(path, "backends"), lambda d, p: _backend(r, d, p))
    # No backends is valid: the compiler keeps a rule whose pools did not resolve, so callers get a clear 503.
    if backends and not any(b.weight > 0 for b in backends):
        r.fail(_join(path, "backends"), "needs at least one backend with a positive weight")
    retry_data = r.obj(data.get("retry"), _join(path, "retry"))
    retry_on = r.strings(retry_data, "retryOn", _join(path, "retry")) if "retryOn" in retry_data else Retry().retry_on
    for i, cond in enumerate(retry_on):
        if cond not in RETRY_CONDITIONS:
            r.fail(f"{path}.retry.retryOn[{i}]", f"must be one of {', '.join(RETRY_CONDITIONS)}; got {cond!r}")
    attempts = r.int_(retry_data, "attempts", _join(path, "retry"), Retry().attempts)
    timeouts = data.get("timeouts")
    decorator = data.get("promptDecorator")
    decorator_path = _join(path, "promptDecorator")
    cache = data.get("cache")
    guardrails = data.get("guardrails")
    web_search = data.get("webSearch")
    return Rule(
        models=models,
        backends=backends,
        fallbacks=r.each(data.get("fallbacks"), _join(path, "fallbacks"), lambda d, p: _backend(r, d, p)),
        retry=Retry(attempts=attempts if attempts is not None else 0, retry_on=retry_on),
        timeouts=None if timeouts is None else _timeouts(r, r.obj(timeouts, _join(path, "timeouts")), path),
        guardrails=None if guardrails is None else read_guardrails(r, guardrails, _join(path, "guardrails")),
        prompt_decorator=None if decorator is None else read_prompt_decorator(r, decorator, decorator_path),
        cache=None if cache is None else read_cache(r, cache, _join(path, "cache")),
        web_search=None if web_search is None else read_web_search(r, web_search, _join(path, "webSearch")),
    )


def read_cache(r: FieldReader, value: Any, path: str, resolver: Resolver = RENDERED) -> Cache | None:
    """A cache object (the same shape in a rendered config and in an AIRoute's spec)."""
    data = r.obj(value, path)
    defaults = Cache()
    mode = r.enum(data, "mode", path, CACHE_MODES, defaults.mode)
    semantic_data = data.get("semantic")
    semantic = None
    if semantic_data is not None:
        semantic = _semantic_cache(r, r.obj(semantic_data, _join(path, "semantic")), _join(path, "semantic"), resolver)
    if mode == "semantic" and semantic_data is None:
        r.fail(_join(path, "semantic"), "is required when mode is semantic (the embedding pool and model)")
    ttl = resolver.seconds(r, data, "ttl", path)
    return Cache(
        mode=mode,
        ttl=ttl if ttl is not None else defaults.ttl,
        scope=r.enum(data, "scope", path, CACHE_SCOPES, defaults.scope),
        max_entry_bytes=r.size(data, "maxEntryBytes", path, defaults.max_entry_bytes),
        cache_tool_calls=r.bool_(data, "cacheToolCalls", path, defaults.cache_tool_calls),
        coalesce=r.bool_(data, "coalesce", path, defaults.coalesce),
        prompt_cache_key=r.bool_(data, "promptCacheKey", path, defaults.prompt_cache_key),
        semantic=semantic if mode == "semantic" else None,
    )


# Where embeddings can be made: the OpenAI embeddings API and the servers that speak it (Gemini's included, as an
# openai-compatible pool on its compatible endpoint).
EMBEDDING_PROVIDERS = ("openai", "openai-compatible", "azure-openai")


def _semantic_cache(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> SemanticCache | None:
    embedding = r.obj(data.get("embedding"), _join(path, "embedding"))
    pool = resolver.pool(r, embedding, "pool", _join(path, "embedding"), EMBEDDING_PROVIDERS)
    model = r.str_(embedding, "model", _join(path, "embedding"), required=True)
    dimensions = r.int_(embedding, "dimensions", _join(path, "embedding"), None, minimum=1)
    threshold = r.number(data, "threshold", path, 0.92, low=0.0, high=1.0)
    if pool is None or model is None:
        return None
    return SemanticCache(
        pool=pool,
        model=model,
        threshold=threshold,
        dimensions=dimensions,
        shadow=r.bool_(data, "shadow", path, False),
    )


def read_web_search(r: FieldReader, value: Any, path: str, resolver: Resolver = RENDERED) -> WebSearch | None:
    """A webSearch object (one reader for a rendered config and an AIRoute's spec; the resolver reads what
    differs: durations, the rewrite pool, engine credentials)."""
    data = r.obj(value, path)
    defaults = WebSearch()
    if isinstance(data.get("enabled"), bool):
        # YAML 1.1 (kubectl included) reads a bare `off` as false and `on` as true.
        r.fail(_join(path, "enabled"), "must be a string: YAML reads a bare off as false, so write 'off' (quoted)")
        enabled = "off"
    else:
        enabled = r.enum(data, "enabled", path, SEARCH_MODES, defaults.enabled)
    engines = r.each(data.get("engines"), _join(path, "engines"), lambda d, p: _search_engine(r, d, p, resolver))
    if not r.items(data.get("engines"), _join(path, "engines")):
        r.fail(_join(path, "engines"), "must hold at least one engine")
    seen: set[str] = set()
    for i, engine in enumerate(engines):
        if engine.name in seen:
            r.fail(f"{path}.engines[{i}].name", f"duplicate engine name {engine.name!r} (set name to tell them apart)")
        seen.add(engine.name)
    max_results = r.int_(data, "maxResults", path, defaults.max_results, minimum=1)
    if max_results is not None and max_results > 20:
        r.fail(_join(path, "maxResults"), f"must be at most 20, got {max_results}")
    timeout = resolver.seconds(r, data, "timeout", path, maximum=60)
    rewrite_data = data.get("rewrite")
    rewrite = None
    if rewrite_data is not None:
        rewrite = _search_rewrite(r, r.obj(rewrite_data, _join(path, "rewrite")), _join(path, "rewrite"), resolver)
    template = r.str_(data, "template", path)
    if template is not None:
        try:
            parse_template(template, SEARCH_TEMPLATE_VARIABLES, headers=False)
        except TemplateError as exc:
            r.fail(_join(path, "template"), str(exc))
            template = None
        else:
            if "{results}" not in template:
                r.fail(_join(path, "template"), "must use {results}, or the model never sees what was found")
    time_zone = r.str_(data, "timeZone", path)
    if time_zone is not None and not _known_time_zone(time_zone):
        r.fail(_join(path, "timeZone"), f"unknown time zone {time_zone!r}; use an IANA name such as Asia/Shanghai")
        time_zone = None
    return WebSearch(
        enabled=enabled,
        engines=engines,
        max_results=max_results or defaults.max_results,
        timeout=timeout or defaults.timeout,
        rewrite=rewrite,
        citations=r.enum(data, "citations", path, SEARCH_CITATIONS, defaults.citations),
        failure_policy=r.enum(data, "failurePolicy", path, FAILURE_POLICIES, defaults.failure_policy),
        template=template,
        time_zone=time_zone,
    )


def _known_time_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _search_engine(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> SearchEngine | None:
    kind = r.enum(data, "type", path, SEARCH_ENGINES, "")
    if "type" not in data:
        return None  # enum() reported it
    url = r.str_(data, "url", path)
    if url is not None and not url.startswith(("http://", "https://")):
        r.fail(_join(path, "url"), f"must start with http:// or https://, got {url!r}")
    if url is None and kind in ("searxng", "elasticsearch"):
        r.fail(_join(path, "url"), f"is required for a {kind} engine (it has no public endpoint)")
    credentials = _search_credentials(r, data.get("credentials"), _join(path, "credentials"), kind, resolver)
    index = r.str_(data, "index", path)
    if kind == "elasticsearch" and index is None:
        r.fail(_join(path, "index"), "is required for an elasticsearch engine")
    title_field = r.str_(data, "titleField", path) or "title"
    snippet_field = r.str_(data, "snippetField", path) or "content"
    match_fields = r.strings(data, "matchFields", path) or (title_field, snippet_field)
    if not kind:
        return None
    return SearchEngine(
        type=kind,
        name=r.str_(data, "name", path) or kind,
        url=url.rstrip("/") if url else None,
        timeout=resolver.seconds(r, data, "timeout", path, maximum=60),
        credentials=credentials,
        index=index,
        match_fields=match_fields,
        title_field=title_field,
        url_field=r.str_(data, "urlField", path),
        snippet_field=snippet_field,
    )


def _search_credentials(
    r: FieldReader, value: Any, path: str, kind: str, resolver: Resolver
) -> tuple[tuple[str, str], ...]:
    """What an engine needs (`apiKey`, Google's `cx` too), as secret ids: from `{apiKey: ID, cx: ID}` in a
    rendered config, from `{secretRef: {name, key}}` in a spec (Google's Secret holds `apiKey` and `cx`)."""
    if value is None:
        if kind in SEARCH_KEYED_ENGINES:
            r.fail(path, f"is required for a {kind} engine (an API key in a Secret)")
        return ()
    required = ("apiKey", "cx") if kind == "google" else ("apiKey",)
    ids = resolver.credentials(r, value, path, required, ())
    return tuple(sorted(ids.items())) if ids else ()


# The rewrite is a chat completion through the pool's translator: any provider can serve it.
REWRITE_PROVIDERS = ("openai", "openai-compatible", "azure-openai", "anthropic", "gemini")


def _search_rewrite(r: FieldReader, data: dict[str, Any], path: str, resolver: Resolver) -> SearchRewrite | None:
    pool = resolver.pool(r, data, "pool", path, REWRITE_PROVIDERS)
    model = r.str_(data, "model", path, required=True)
    timeout = resolver.seconds(r, data, "timeout", path, maximum=60)
    if pool is None or model is None:
        return None
    return SearchRewrite(pool=pool, model=model, timeout=timeout or 2.0)


def read_prompt_decorator(r: FieldReader, value: Any, path: str) -> PromptDecorator | None:
    """A promptDecorator object (the same shape in a rendered config and in an AIRoute's spec)."""
    data = r.obj(value, path)
    prepend = r.each(data.get("prepend"), _join(path, "prepend"), lambda d, p: _decorator_message(r, d, p))
    append = r.each(data.get("append"), _join(path, "append"), lambda d, p: _decorator_message(r, d, p))
    if not prepend and not append:
        r.fail(path, "must add at least one message (prepend or append)")
        return None
    return PromptDecorator(prepend=prepend, append=append)


def _decorator_message(r: FieldReader, data: dict[str, Any], path: str) -> DecoratorMessage | None:
    role = r.enum(data, "role", path, DECORATOR_ROLES, "")
    content = r.str_(data, "content", path, required=True)
    if content is not None:
        try:
            parse_template(content)
        except TemplateError as exc:
            r.fail(_join(path, "content"), str(exc))
            return None
    if not role or content is None:
        return None
    return DecoratorMessage(role=role, content=content)


def _route(r: FieldReader, data: dict[str, Any], path: str) -> Route | None:
    name = r.str_(data, "name", path, required=True)
    rules = r.each(data.get("rules"), _join(path, "rules"), lambda d, p: _rule(r, d, p))
    if not rules:
        r.fail(_join(path, "rules"), "must hold at least one rule")
    prefix = r.str_(data, "pathPrefix", path) or "/v1"
    if not prefix.startswith("/"):
        r.fail(_join(path, "pathPrefix"), f"must start with '/', got {prefix!r}")
    access_data = r.obj(data.get("access"), _join(path, "access"))
    selectors = tuple(
        tuple(sorted((str(k), str(v)) for k, v in r.obj(sel, f"{path}.access.selectors[{i}]").items()))
        for i, sel in enumerate(r.items(access_data.get("selectors"), _join(path, "access.selectors")))
    )
    if name is None:
        return None
    return Route(
        name=name,
        rules=rules,
        hosts=tuple(h.lower() for h in r.strings(data, "hosts", path)),
        path_prefix=prefix.rstrip("/") or "/",
        access=Access(consumers=r.strings(access_data, "consumers", _join(path, "access")), selectors=selectors),
    )


def _consumer(r: FieldReader, data: dict[str, Any], path: str) -> Consumer | None:
    name = r.str_(data, "name", path, required=True)
    hashes = r.strings(data, "keyHashes", path)
    for i, h in enumerate(hashes):
        if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
            r.fail(f"{path}.keyHashes[{i}]", "must be a lower-case SHA-256 hex digest")
    if name is None:
        return None
    return Consumer(
        name=name,
        key_hashes=hashes,
        labels=r.pairs(data, "labels", path),
        source_ips=r.strings(data, "sourceIPs", path),
    )


def _limit(r: FieldReader, data: dict[str, Any], path: str) -> Limit | None:
    window = r.seconds(data, "window", path, None)
    if window is None:
        r.fail(_join(path, "window"), "is required")
    tokens = r.int_(data, "tokens", path, None, minimum=1)
    requests = r.int_(data, "requests", path, None, minimum=1)
    usd = data.get("usd")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, int | float) or not 0 < usd <= MAX_USD):
        r.fail(_join(path, "usd"), f"must be a number of US dollars above 0 and at most {MAX_USD:g}, got {usd!r}")
        usd = None
    if sum(x is not None for x in (tokens, requests, data.get("usd"))) != 1:
        r.fail(path, "must set exactly one of tokens, requests or usd")
    if window is None:
        return None
    return Limit(
        window=window,
        tokens=tokens,
        requests=requests,
        usd=float(usd) if usd is not None else None,
        count=r.enum(data, "count", path, LIMIT_COUNTS, "total"),
    )


def _override(r: FieldReader, data: dict[str, Any], path: str) -> LimitOverride | None:
    return LimitOverride(
        match=r.pairs(data, "match", path),
        limits=r.each(data.get("limits"), _join(path, "limits"), lambda d, p: _limit(r, d, p)),
    )


def _rate_limit(r: FieldReader, data: dict[str, Any], path: str) -> RateLimit | None:
    name = r.str_(data, "name", path, required=True)
    limits = r.each(data.get("limits"), _join(path, "limits"), lambda d, p: _limit(r, d, p))
    if not limits:
        r.fail(_join(path, "limits"), "must hold at least one limit")
    if name is None:
        return None
    return RateLimit(
        name=name,
        routes=r.strings(data, "routes", path),
        key=r.strings(data, "key", path) or ("consumer",),
        limits=limits,
        overrides=r.each(data.get("overrides"), _join(path, "overrides"), lambda d, p: _override(r, d, p)),
        message=r.str_(data, "message", path) or DEFAULT_LIMIT_MESSAGE,
        failure_policy=r.enum(data, "failurePolicy", path, FAILURE_POLICIES, "open"),
        default_max_tokens=r.int_(data, "defaultMaxTokens", path, 1024, minimum=1) or 1024,
    )


def _check_version(r: FieldReader, data: dict[str, Any]) -> int:
    version = data.get("version")
    if version != SCHEMA_VERSION:
        r.fail("version", f"must be {SCHEMA_VERSION} (this data plane's schema version), got {version!r}")
    return SCHEMA_VERSION


def _check_references(r: FieldReader, config: GatewayConfig) -> None:
    pools = {p.name for p in config.pools}
    named: tuple[tuple[str, list[str]], ...] = (
        ("pools", [p.name for p in config.pools]),
        ("routes", [r.name for r in config.routes]),
        ("consumers", [c.name for c in config.consumers]),
    )
    for kind, names in named:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                r.fail(f"{kind}[{i}].name", f"duplicate name {name!r}")
            seen.add(name)
    for i, route in enumerate(config.routes):
        for j, rule in enumerate(route.rules):
            for group in ("backends", "fallbacks"):
                for k, backend in enumerate(getattr(rule, group)):
                    if backend.pool not in pools:
                        r.fail(f"routes[{i}].rules[{j}].{group}[{k}].pool", f"unknown pool {backend.pool!r}")
    by_name = {p.name: p for p in config.pools}
    routes = {route.name: route for route in config.routes}
    for i, rate_limit in enumerate(config.rate_limits):
        if not rate_limit.has_usd:
            continue
        for name in rate_limit.routes:
            if name in routes:
                for problem in unpriced(routes[name], by_name):
                    r.fail(f"rateLimits[{i}]", f"has a usd limit, but {problem}")


def config_from_dict(data: Any) -> GatewayConfig:
    """Validate a plain-data document and build the config, or raise ConfigError listing every problem."""
    r = FieldReader()
    doc = r.obj(data, "")
    if r.problems:
        raise ConfigError(r.problems)
    version = _check_version(r, doc)
    settings_data = r.obj(doc.get("settings"), "settings")
    config = GatewayConfig(
        version=version,
        hash=str(doc.get("hash") or ""),
        pools=r.each(doc.get("pools"), "pools", lambda d, p: _pool(r, d, p)),
        routes=r.each(doc.get("routes"), "routes", lambda d, p: _route(r, d, p)),
        consumers=r.each(doc.get("consumers"), "consumers", lambda d, p: _consumer(r, d, p)),
        rate_limits=r.each(doc.get("rateLimits"), "rateLimits", lambda d, p: _rate_limit(r, d, p)),
        settings=Settings(
            max_body_bytes=r.int_(settings_data, "maxBodyBytes", "settings", DEFAULT_MAX_BODY_BYTES, minimum=1024)
            or DEFAULT_MAX_BODY_BYTES
        ),
    )
    _check_references(r, config)
    if r.problems:
        raise ConfigError(r.problems)
    return config


def secrets_from_dict(data: Any) -> SecretsConfig:
    r = FieldReader()
    doc = r.obj(data, "")
    version = _check_version(r, doc) if doc else SCHEMA_VERSION
    keys = r.obj(doc.get("keys"), "keys")
    for key_id, value in keys.items():
        if not isinstance(value, str) or not value:
            r.fail(f"keys.{key_id}", "must be a non-empty string")  # never echo the value
    if r.problems:
        raise ConfigError(r.problems)
    return SecretsConfig(version=version, hash=str(doc.get("hash") or ""), keys=tuple(sorted(keys.items())))


def parse_document(text: str | bytes, source: str = "document") -> Any:
    """JSON or YAML text to plain data (YAML is a superset of JSON, but the JSON parser is faster and stricter)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid JSON or YAML: {exc}"]) from None


def load_config_file(path: Path) -> GatewayConfig:
    return config_from_dict(parse_document(path.read_bytes(), str(path)))


def load_secrets_file(path: Path) -> SecretsConfig:
    return secrets_from_dict(parse_document(path.read_bytes(), str(path)))
