"""What a request cost, from the serving pool's pricing (USD per million tokens)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from tollway_contract.model import Price

from .usage import Usage


def price_for(pricing: tuple[Price, ...], model: str) -> Price | None:
    for price in pricing:
        if price.model == model or fnmatchcase(model, price.model):
            return price
    return None


def cost_usd(usage: Usage, price: Price) -> float:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return (
        (usage.input_tokens - cached) * price.input + cached * cached_price + usage.output_tokens * price.output
    ) / 1e6
