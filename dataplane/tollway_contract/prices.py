"""Which price applies to a served model, and which models a money budget could not price.

Shared by the compiler (a usd limit on a route with an unpriced model is a compile error that names it), the
config reader (a hand-written config is held to the same rule) and the data plane (the reservation ceiling and
the settled cost). Prices are USD per million tokens: the cost of one token in micro-dollars is the price itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase

from .model import Pool, Price, Route, Rule

MAX_USD = 1e9  # a budget above this is a typo; it also keeps micro-dollars exact in Lua's doubles


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def price_for(pricing: tuple[Price, ...], model: str) -> Price | None:
    """The first entry whose model (an exact name or a glob) matches."""
    for price in pricing:
        if price.model == model or fnmatchcase(model, price.model):
            return price
    return None


def served_models(rule: Rule, requested: str | None = None) -> Iterator[tuple[str, str]]:
    """(pool, model) for every backend and fallback of a rule. A backend without a model rewrite serves the
    requested name; without a request, each of the rule's model patterns stands for the names it matches."""
    for backend in (*rule.backends, *rule.fallbacks):
        if backend.model is not None:
            yield backend.pool, backend.model
        elif requested is not None:
            yield backend.pool, requested
        else:
            for pattern in rule.models:
                yield backend.pool, pattern


def covering_price(pricing: tuple[Price, ...], pattern: str) -> Price | None:
    """A price that applies to every name `pattern` can match: for an exact name, its price; for a glob, an
    entry whose own pattern matches the glob's text (price `gpt-4o*` covers rule model `gpt-4o-*`)."""
    return price_for(pricing, pattern)


def unpriced(route: Route, pools: Mapping[str, Pool]) -> Iterator[str]:
    """A sentence for each model of the route that a money budget could not price."""
    for j, rule in enumerate(route.rules):
        for pool_name, model in served_models(rule):
            pool = pools.get(pool_name)
            if pool is not None and covering_price(pool.pricing, model) is None:
                what = f"models matching {model!r}" if is_glob(model) else f"model {model!r}"
                yield f"route {route.name} rule {j}: pool {pool_name} has no price for {what}"


def ceiling(rule: Rule, requested: str, pools: Mapping[str, Pool]) -> Price | None:
    """The most a request on this rule can cost per token: per kind of token, the highest price among the
    backends and fallbacks it may reach (cached input counted at the higher of its own and the input price)."""
    found = [
        price
        for pool_name, model in served_models(rule, requested)
        if (pool := pools.get(pool_name)) is not None and (price := price_for(pool.pricing, model)) is not None
    ]
    if not found:
        return None
    top_input = max(max(p.input, p.cached_input or 0.0) for p in found)
    return Price(model=requested, input=top_input, output=max(p.output for p in found), cached_input=top_input)
