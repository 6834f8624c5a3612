"""An immutable view of one config, prepared for the request path. Reloads swap whole snapshots."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tollway_contract.model import GatewayConfig, Price, RateLimit, Rule, SecretsConfig
from tollway_contract.prices import ceiling

from .auth import Authenticator
from .pools import KeyStateRegistry, PoolRuntime
from .providers import translator_for
from .providers.base import Translator
from .routing import Router
from .stages import pipeline_for, stage_warnings
from .stages.base import StageServices
from .stages.pipeline import Pipeline
from .upstream import PoolModels, Upstream

if TYPE_CHECKING:
    from .stages.cache.store import CacheStore

if TYPE_CHECKING:
    import aiohttp


@dataclass(frozen=True)
class Snapshot:
    config: GatewayConfig
    auth: Authenticator
    router: Router
    pools: dict[str, PoolRuntime]
    translators: dict[str, Translator | None]
    generation: int
    limits_by_route: dict[str, tuple[RateLimit, ...]] = field(default_factory=dict)
    pipelines: dict[int, Pipeline] = field(default_factory=dict)  # by id() of the rule: only rules with stages
    loaded_at: float = field(default_factory=time.time)
    warnings: tuple[str, ...] = ()
    _ceilings: dict[tuple[int, str], Price | None] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.config.hash

    def pipeline(self, rule: Rule) -> Pipeline | None:
        """The rule's stages (built once per snapshot), or None: the request then skips the pipeline."""
        return self.pipelines.get(id(rule)) if self.pipelines else None

    def price_ceiling(self, rule: Rule, model: str) -> Price | None:
        """The dearest price among the backends and fallbacks a request for `model` on `rule` may reach, for
        money budgets. Computed once per rule and model for the life of this snapshot."""
        slot = (id(rule), model)  # rules live as long as the snapshot, so their ids are stable keys
        if slot not in self._ceilings:
            if len(self._ceilings) > 10_000:
                self._ceilings.clear()  # requested names on glob rules are the caller's choice: stay bounded
            self._ceilings[slot] = ceiling(rule, model, {name: p.config for name, p in self.pools.items()})
        return self._ceilings[slot]

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        secrets: SecretsConfig,
        registry: KeyStateRegistry,
        generation: int,
        *,
        upstream: Upstream | None = None,
        cache_store: CacheStore | None = None,
        http: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> Snapshot:
        """`http` gives stages the process's HTTP client once it runs (a stage calling a checker, say)."""
        key_values = dict(secrets.keys)
        pools = {p.name: PoolRuntime(p, key_values, registry) for p in config.pools}
        warnings = []
        for pool in pools.values():
            if pool.missing_keys:
                warnings.append(f"pool {pool.name}: {pool.missing_keys} key(s) have no value in the secrets document")
            if translator_for(pool.config.provider) is None:
                warnings.append(f"pool {pool.name}: provider {pool.config.provider!r} is not supported yet")
        limits_by_route: dict[str, list[RateLimit]] = {}
        for rate_limit in config.rate_limits:
            for route in rate_limit.routes:
                limits_by_route.setdefault(route, []).append(rate_limit)
        registry.forget_except({k.id for p in pools.values() for k in p.keys})
        translators = {name: translator_for(p.config.provider) for name, p in pools.items()}
        models = PoolModels(upstream, pools, translators) if upstream is not None else None
        services = StageServices(pools=pools, models=models, secrets=key_values, cache_store=cache_store)
        if http is not None:
            services = dataclasses.replace(services, http=http)
        pipelines = {}
        for configured in config.routes:
            for rule in configured.rules:
                warnings.extend(stage_warnings(configured.name, rule, services))
                pipeline = pipeline_for(rule, services)
                if pipeline is not None:
                    pipelines[id(rule)] = pipeline  # the snapshot holds the config, so ids stay unique
        return cls(
            config=config,
            auth=Authenticator(config.consumers),
            router=Router(config.routes),
            pools=pools,
            translators=translators,
            generation=generation,
            limits_by_route={route: tuple(limits) for route, limits in limits_by_route.items()},
            pipelines=pipelines,
            warnings=tuple(warnings),
        )
