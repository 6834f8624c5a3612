"""An immutable view of one config, prepared for the request path. Reloads swap whole snapshots."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tollway_contract.model import GatewayConfig, RateLimit, Rule, SecretsConfig

from .auth import Authenticator
from .pools import KeyStateRegistry, PoolRuntime
from .providers import translator_for
from .providers.base import Translator
from .routing import Router
from .stages import pipeline_for
from .stages.base import StageServices
from .stages.pipeline import Pipeline
from .upstream import PoolModels, Upstream

if TYPE_CHECKING:
    from .stages.cache.store import CacheStore


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

    @property
    def hash(self) -> str:
        return self.config.hash

    def pipeline(self, rule: Rule) -> Pipeline | None:
        """The rule's stages (built once per snapshot), or None: the request then skips the pipeline."""
        return self.pipelines.get(id(rule)) if self.pipelines else None

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
    ) -> Snapshot:
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
        services = StageServices(pools=pools, models=models, cache_store=cache_store, http=upstream, secrets=key_values)
        pipelines = {}
        for configured in config.routes:
            for rule in configured.rules:
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
