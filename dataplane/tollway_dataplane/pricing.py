"""What a request cost, from the serving pool's pricing (USD per million tokens)."""

from __future__ import annotations

import math

from tollway_contract.model import USD_UNITS, Price
from tollway_contract.prices import price_for

from .usage import Usage

__all__ = ["cost_usd", "micro_usd", "price_for", "reserve_micro_usd"]


def cost_usd(usage: Usage, price: Price) -> float:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return (
        (usage.input_tokens - cached) * price.input + cached * cached_price + usage.output_tokens * price.output
    ) / 1e6


def micro_usd(usd: float) -> int:
    """Dollars as the limiter's integer micro-dollars, rounded up (a budget is never undercharged); the small
    tolerance keeps float noise (3.0000000001) from adding a unit."""
    return max(0, math.ceil(usd * USD_UNITS - 1e-6))


def reserve_micro_usd(input_tokens: int, output_tokens: int, ceiling: Price) -> int:
    """The estimate's cost at the ceiling price: every input token at the dearest input price."""
    return micro_usd((max(0, input_tokens) * ceiling.input + max(0, output_tokens) * ceiling.output) / 1e6)
