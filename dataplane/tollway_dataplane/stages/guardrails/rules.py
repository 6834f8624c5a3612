"""The `rules` checker: regular expressions, literal keywords and PII detectors, run in the gateway itself.

Everything is compiled once per config snapshot. `hits` finds non-overlapping spans (detectors first, in their
canonical order, then patterns, then keywords, so an email inside a pattern's match is masked as [EMAIL]);
`mask` replaces them. Both are synchronous and cheap, which is why a stream runs them on every batch while
remote checkers see a window at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tollway_contract.model import Checker, RulesSettings

from .detectors import CONDITIONS, DETECTORS, Detector
from .verdict import CheckContext, Result


@dataclass(frozen=True, slots=True)
class Hit:
    start: int
    end: int
    category: str  # a detector's name, "pattern" or "keyword"
    replacement: str


class RulesChecker:
    remote = False

    def __init__(self, checker: Checker):
        settings = checker.settings
        assert isinstance(settings, RulesSettings)
        self.config = checker
        self.name = checker.name
        flags = re.IGNORECASE if settings.ignore_case else 0
        self._replacement = settings.replacement
        self._detectors: tuple[Detector, ...] = tuple(d for n, d in DETECTORS.items() if n in settings.detectors)
        self._patterns = tuple(re.compile(p, flags) for p in settings.patterns)
        # One alternation for every keyword, longest first so "foo bar" wins over "foo".
        words = sorted(set(settings.keywords), key=len, reverse=True)
        self._keywords = re.compile("|".join(re.escape(w) for w in words), flags) if words else None

    def hits(self, text: str) -> list[Hit]:
        taken: list[Hit] = []

        def take(start: int, end: int, category: str, replacement: str) -> None:
            if end > start and all(end <= h.start or start >= h.end for h in taken):
                taken.append(Hit(start, end, category, replacement))

        known: dict[str, bool] = {}
        for detector in self._detectors:
            if not all(_holds(known, condition, text) for condition in detector.needs):
                continue
            for m in detector.pattern.finditer(text):
                if detector.valid(m.group()):
                    take(m.start(), m.end(), detector.name, detector.placeholder)
        for pattern in self._patterns:
            for m in pattern.finditer(text):
                take(m.start(), m.end(), "pattern", self._replacement)
        if self._keywords is not None:
            for m in self._keywords.finditer(text):
                take(m.start(), m.end(), "keyword", self._replacement)
        taken.sort(key=lambda h: h.start)
        return taken

    def mask(self, text: str) -> str:
        return apply(text, self.hits(text))

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        categories: list[str] = []
        rewritten: list[str] = []
        changed = False
        for text in texts:
            hits = self.hits(text)
            categories.extend(h.category for h in hits)
            if hits and self.config.action == "mask":
                rewritten.append(apply(text, hits))
                changed = True
            else:
                rewritten.append(text)
        return Result(categories=tuple(dict.fromkeys(categories)), texts=rewritten if changed else None)


def _holds(known: dict[str, bool], condition: str, text: str) -> bool:
    value = known.get(condition)
    if value is None:
        value = known[condition] = CONDITIONS[condition](text)
    return value


def apply(text: str, hits: list[Hit]) -> str:
    """`text` with every hit (sorted, non-overlapping) replaced."""
    if not hits:
        return text
    out = []
    position = 0
    for hit in hits:
        out.append(text[position : hit.start])
        out.append(hit.replacement)
        position = hit.end
    out.append(text[position:])
    return "".join(out)
