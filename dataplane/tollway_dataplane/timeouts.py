"""Effective upstream timeouts: the route's override over the pool's over the gateway's defaults."""

from __future__ import annotations

import functools

from tollway_contract.model import Timeouts

# Generous defaults: reasoning models can think for minutes before the first token.
DEFAULTS = Timeouts(connect=10.0, first_byte=300.0, idle=300.0, total=None)


@functools.lru_cache(maxsize=1024)  # Timeouts are frozen: a handful of distinct pairs per config
def effective(pool: Timeouts, route: Timeouts | None) -> Timeouts:
    return DEFAULTS.overlaid(pool).overlaid(route)
