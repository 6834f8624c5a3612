"""The `openai-moderation` checker: OpenAI's `/moderations` API (or any server that speaks it) through a pool.

The texts go in one call (`input` is an array); each result has `categories` (name -> flagged) and
`category_scores` (name -> 0..1). A category counts when it has a threshold and its score reaches it, or else
when the service flagged it; `categories` narrows which names may count at all.
"""

from __future__ import annotations

from typing import Any

from tollway_contract.model import Checker, ModerationSettings

from ..poolclient import PoolClient
from .verdict import CheckContext, Result


class ModerationChecker:
    remote = True

    def __init__(self, checker: Checker, client: PoolClient | None):
        settings = checker.settings
        assert isinstance(settings, ModerationSettings)
        self.config = checker
        self.name = checker.name
        self._settings = settings
        self._client = client  # None: the pool is missing (the checker fails; the policy decides)
        self._only = frozenset(settings.categories)
        self._thresholds = dict(settings.thresholds)

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        texts = [t for t in texts if t]
        if not texts:
            return Result()
        if self._client is None:
            return Result(error="pool-missing")
        answer = await self._client.post_json("moderations", {"model": self._settings.model, "input": texts})
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            return Result(error="invalid-response")
        found: dict[str, None] = {}
        for result in results:
            if isinstance(result, dict):
                for category in self._counted(result):
                    found.setdefault(category)
        return Result(categories=tuple(found))

    def _counted(self, result: dict[str, Any]) -> list[str]:
        flagged = _obj(result.get("categories"))
        scores = _obj(result.get("category_scores"))
        out = []
        for name in {*flagged, *scores}:
            if self._only and name not in self._only:
                continue
            threshold = self._thresholds.get(name)
            score = scores.get(name)
            if threshold is not None:
                if isinstance(score, int | float) and score >= threshold:
                    out.append(name)
            elif flagged.get(name) is True:
                out.append(name)
        return sorted(out)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
