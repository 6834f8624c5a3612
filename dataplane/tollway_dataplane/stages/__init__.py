"""The request stages, in the order the gateway runs them. A new capability is one module here plus its config.

`STAGES` fixes the order (DESIGN section 7: guardrails, prompt decorator, cache, web search); each entry builds
the stage for one rule from the rule's config, or None when the rule does not use it. `pipeline_for` is called
once per rule per config snapshot.
"""

from __future__ import annotations

from collections.abc import Callable

from tollway_contract.model import Rule

from . import cache, decorator, guardrails, websearch
from .base import Stage, StageServices
from .pipeline import Pipeline

Builder = Callable[[Rule, StageServices], Stage | None]

STAGES: tuple[Builder, ...] = (guardrails.build, decorator.build, cache.build, websearch.build)


def pipeline_for(rule: Rule, services: StageServices) -> Pipeline | None:
    """The rule's stages, or None when it has none (the request path then skips the pipeline entirely)."""
    stages = tuple(stage for build in STAGES if (stage := build(rule, services)) is not None)
    return Pipeline(stages) if stages else None


def stage_warnings(route: str, rule: Rule, services: StageServices) -> list[str]:
    """What a snapshot should say about the rule's stage settings: references with nothing behind them."""
    return [f"route {route}: {warning}" for warning in guardrails.warnings(rule, services)]
