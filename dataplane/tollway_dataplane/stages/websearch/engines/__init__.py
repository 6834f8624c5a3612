"""Search engines, one module each; `build` makes the engine a config names, with its credentials' values."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tollway_contract.model import SearchEngine

from .arxiv import ArxivEngine
from .base import Engine, EngineError, Location, Query
from .elasticsearch import ElasticsearchEngine
from .google import GoogleEngine
from .quark import QuarkEngine
from .searxng import SearxngEngine
from .tavily import TavilyEngine

__all__ = ["Engine", "EngineError", "Location", "Query", "build"]

log = logging.getLogger("tollway.search")


def build(config: SearchEngine, default_timeout: float, secrets: Mapping[str, str]) -> Engine:
    """The engine for `config`; a credential whose id has no value builds an engine that reports
    `unconfigured` on every call (the snapshot still loads, the status of the AIRoute says why)."""
    timeout = config.timeout or default_timeout
    ids = dict(config.credentials)
    for field, secret_id in ids.items():
        if secret_id not in secrets:
            log.warning("search engine credential has no value", extra={"engine": config.name, "field": field})
    key = secrets.get(ids["apiKey"]) if "apiKey" in ids else None
    kind = config.type
    if kind == "searxng":
        return SearxngEngine(config, timeout)
    if kind == "tavily":
        return TavilyEngine(config, timeout, key)
    if kind == "google":
        return GoogleEngine(config, timeout, key, secrets.get(ids["cx"]) if "cx" in ids else None)
    if kind == "quark":
        return QuarkEngine(config, timeout, key)
    if kind == "arxiv":
        return ArxivEngine(config, timeout)
    if kind == "elasticsearch":
        return ElasticsearchEngine(config, timeout, key)
    raise ValueError(f"unknown search engine type {kind!r}")
