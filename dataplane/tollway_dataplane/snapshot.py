"""An immutable view of one config, prepared for the request path. Reloads swap whole snapshots."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tollway_contract.model import GatewayConfig, Price, RateLimit, Rule, SecretsConfig
from tollway_contract.prices import ceiling

from .auth import Authenticator
from .pools import KeyStateRegistry, PoolRuntime
from .providers import translator_for
from .providers.base import Translator
from .routing import Router


@dataclass(frozen=True)
class Snapshot:
    config: GatewayConfig
    auth: Authenticator
    router: Router
    pools: dict[str, PoolRuntime]
    translators: dict[str, Translator | None]
    generation: int
    limits_by_route: dict[str, tuple[RateLimit, ...]] = field(default_factory=dict)
    loaded_at: float = field(default_factory=time.time)
    warnings: tuple[str, ...] = ()
    _ceilings: dict[tuple[int, str], Price | None] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.config.hash

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
        cls, config: GatewayConfig, secrets: SecretsConfig, registry: KeyStateRegistry, generation: int
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
        return cls(
            config=config,
            auth=Authenticator(config.consumers),
            router=Router(config.routes),
            pools=pools,
            translators={name: translator_for(p.config.provider) for name, p in pools.items()},
            generation=generation,
            limits_by_route={route: tuple(limits) for route, limits in limits_by_route.items()},
            warnings=tuple(warnings),
        )
