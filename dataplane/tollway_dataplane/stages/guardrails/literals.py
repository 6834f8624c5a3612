"""The literal text every match of a regular expression contains, so a rules checker can rule a text out with a
substring search instead of running the expression.

Python's regex engine tries a pattern at every position of the text, some 40 ns each for a handful of
alternatives: a few microseconds for a stream window, run on every batch. `str.__contains__` looks for a word
at memory speed. Most guardrail patterns are phrases ("ignore previous instructions", "BEGIN PRIVATE KEY")
whose top level is a run of plain characters, and a text without that run cannot match.

Only what is certain is used. The run is taken from the top level of the parsed expression (a concatenation),
never from inside a group, a repeat or an alternative. Case-insensitive runs are compared lower-cased and only
for ASCII runs on ASCII texts: Python's case-insensitive matching also pairs some ASCII letters with non-ASCII
ones (`k` with the Kelvin sign, `s` with the long s), which lower-casing does not. A pattern that changes the
case flag inside a group, or that the parser of this Python version reads differently, gives no literal, and the
checker runs the expressions as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

try:  # the parser behind re.compile; private, so anything unexpected means "no literal"
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - a Python without them
    _sre = _sre_parse = None


def necessary_literal(pattern: str, flags: int = 0) -> tuple[str, bool] | None:
    """(run, case-insensitive) for the longest plain run at the top level of `pattern`, lower-cased when the
    match ignores case; None when there is none that is certain."""
    if _sre_parse is None:
        return None
    try:
        parsed = _sre_parse.parse(pattern, flags)
        ignore_case = bool(parsed.state.flags & re.IGNORECASE)
        if _changes_case(parsed.data):
            return None
        best = ""
        run: list[str] = []
        for op, argument in [*parsed.data, (None, None)]:
            if op is _sre.LITERAL:
                run.append(chr(argument))
                continue
            if len(run) > len(best):
                best = "".join(run)
            run = []
    except Exception:  # an unexpected parse tree: fall back to running the expression
        return None
    if not best or (ignore_case and not best.isascii()):
        return None
    return (best.lower(), True) if ignore_case else (best, False)


def _changes_case(items: Iterable[tuple[Any, Any]]) -> bool:
    """Whether a group anywhere below sets or clears the case flag, (?i:...) or (?-i:...)."""
    for op, argument in items:
        if op is _sre.SUBPATTERN and (argument[1] | argument[2]) & re.IGNORECASE:
            return True
        if any(_changes_case(sub.data) for sub in _subpatterns(argument)):
            return True
    return False


def _subpatterns(argument: Any) -> Iterable[Any]:
    """The nested expressions in an item's argument, whatever its shape (repeat, branch, group, assertion)."""
    if isinstance(argument, _sre_parse.SubPattern):
        yield argument
    elif isinstance(argument, (list, tuple)):
        for part in argument:
            yield from _subpatterns(part)


class LiteralFilter:
    """Whether any of several literals occurs in a text; built only when every pattern has one."""

    __slots__ = ("_exact", "_folded", "width")

    def __init__(self, literals: Sequence[tuple[str, bool]]):
        self._exact = tuple(dict.fromkeys(word for word, folded in literals if not folded))
        self._folded = tuple(dict.fromkeys(word for word, folded in literals if folded))
        self.width = max(len(word) for word, _ in literals)  # every occurrence lies within this many characters

    @classmethod
    def of(cls, patterns: Sequence[str], flags: int) -> LiteralFilter | None:
        literals = [necessary_literal(p, flags) for p in patterns]
        if not literals or any(lit is None for lit in literals):
            return None
        return cls([lit for lit in literals if lit is not None])

    @property
    def folded(self) -> bool:
        """Whether some literal is compared lower-cased (which decides only on ASCII texts)."""
        return bool(self._folded)

    def decides(self, text: str) -> bool:
        """False when the lower-cased comparison would not be exact (a non-ASCII text, folded literals)."""
        return not self._folded or text.isascii()

    def occurs(self, text: str) -> bool:
        """Whether any literal occurs (call only when `decides(text)`)."""
        for word in self._exact:
            if word in text:
                return True
        if self._folded:
            lowered = text.lower()
            for word in self._folded:
                if word in lowered:
                    return True
        return False
