"""The `rules` checker: regular expressions, literal keywords and PII detectors, run in the gateway itself.

Everything is compiled once per config snapshot. `hits` finds non-overlapping spans (detectors first, in their
canonical order, then patterns, then keywords, so an email inside a pattern's match is masked as [EMAIL]);
`mask` replaces them. Both are synchronous and cheap, which is why a stream runs them on every batch while
remote checkers see a window at a time.

Two things keep the common case (nothing found) cheap. A text that lacks the literal words each pattern and
keyword must contain cannot match any of them (literals.py: a substring search, where one regex scan costs
microseconds); a text that has one, or a set with a pattern that has none, is searched with the patterns and
keywords compiled into one alternation, so one scan replaces one per pattern. And a whole text's findings are
remembered (a bounded map per checker, texts up to 2,048 characters): system prompts, few-shot examples and a
conversation's history come back on every turn, and a rule is a function of the text alone. Stream buffers,
which grow batch by batch, are never remembered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tollway_contract.model import Checker, RulesSettings

from .detectors import CONDITIONS, DETECTORS, Detector
from .literals import LiteralFilter
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
        self.detectors: tuple[Detector, ...] = tuple(d for n, d in DETECTORS.items() if n in settings.detectors)
        self._patterns = tuple(re.compile(p, flags) for p in settings.patterns)
        # One alternation for every keyword, longest first so "foo bar" wins over "foo".
        words = sorted(set(settings.keywords), key=len, reverse=True)
        self._keywords = re.compile("|".join(re.escape(w) for w in words), flags) if words else None
        searched = [*settings.patterns, *(re.escape(w) for w in words)]
        self.searches = bool(searched)  # patterns or keywords to run after the detectors
        self.literals = LiteralFilter.of(searched, flags)
        self._prefilter = _alternation(searched, flags)
        self._memo: dict[str, tuple[Hit, ...]] = {}

    def remembered_hits(self, text: str) -> tuple[Hit, ...]:
        """`hits` of a whole text (a message, an answer), remembered."""
        found = self._memo.get(text)
        if found is None:
            found = tuple(self.hits(text))
            if len(text) <= MEMO_TEXT_CHARS:
                if len(self._memo) >= MEMO_ENTRIES:
                    self._memo.clear()  # a burst of new texts: start over rather than track recency per lookup
                self._memo[text] = found
        return found

    def hits(self, text: str) -> list[Hit]:
        taken: list[Hit] = []

        def take(start: int, end: int, category: str, replacement: str) -> None:
            if end > start and all(end <= h.start or start >= h.end for h in taken):
                taken.append(Hit(start, end, category, replacement))

        known: dict[str, bool] = {}
        for detector in self.detectors:
            if not all(_holds(known, condition, text) for condition in detector.needs):
                continue
            for m in detector.pattern.finditer(text):
                if detector.valid(m.group()):
                    take(m.start(), m.end(), detector.name, detector.placeholder)
        if not self._may_match(text):
            taken.sort(key=lambda h: h.start)
            return taken  # no pattern and no keyword occurs
        for pattern in self._patterns:
            for m in pattern.finditer(text):
                take(m.start(), m.end(), "pattern", self._replacement)
        if self._keywords is not None:
            for m in self._keywords.finditer(text):
                take(m.start(), m.end(), "keyword", self._replacement)
        taken.sort(key=lambda h: h.start)
        return taken

    def _may_match(self, text: str) -> bool:
        """False only when no pattern and no keyword can match: a word each must contain is absent (a substring
        search), or else the one alternation of them all finds nothing (one regex scan)."""
        literals = self.literals
        if literals is not None and literals.decides(text) and not literals.occurs(text):
            return False
        return self._prefilter is None or self._prefilter.search(text) is not None

    def mask(self, text: str) -> str:
        return apply(text, self.remembered_hits(text))

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        return self.check_now(texts)

    def check_now(self, texts: list[str]) -> Result:
        """`check` as it is: synchronous (what `evaluate` calls for in-process checkers)."""
        found = [self.remembered_hits(text) for text in texts]  # once each: a long text is not remembered
        if not any(found):
            return _NOTHING  # the common case: no list of texts or categories to build
        categories: list[str] = []
        rewritten: list[str] = []
        changed = False
        for text, hits in zip(texts, found, strict=True):
            categories.extend(h.category for h in hits)
            if hits and self.config.action == "mask":
                rewritten.append(apply(text, hits))
                changed = True
            else:
                rewritten.append(text)
        return Result(categories=tuple(dict.fromkeys(categories)), texts=rewritten if changed else None)


_NOTHING = Result()
MEMO_ENTRIES = 1024
MEMO_TEXT_CHARS = 2048
_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _alternation(patterns: list[str], flags: int) -> re.Pattern[str] | None:
    """One regex matching wherever any of `patterns` matches; None when they cannot be joined faithfully
    (a backreference would point at another pattern's group, a global flag in the middle is an error)."""
    if len(patterns) < 2 or any(_BACKREFERENCE.search(p) for p in patterns):
        return None
    # A leading global flag, "(?i)abc", applies to that pattern alone once scoped: "(?i:abc)".
    scoped = [
        _GLOBAL_FLAGS.sub(lambda m: f"(?{m.group(1)}:", p, count=1) + ")" if _GLOBAL_FLAGS.match(p) else f"(?:{p})"
        for p in patterns
    ]
    try:
        return re.compile("|".join(scoped), flags)
    except re.error:
        return None


def _holds(known: dict[str, bool], condition: str, text: str) -> bool:
    value = known.get(condition)
    if value is None:
        value = known[condition] = CONDITIONS[condition](text)
    return value


def apply(text: str, hits: Sequence[Hit]) -> str:
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
