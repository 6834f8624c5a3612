"""A rules checker over a text that grows at its end and is cut at its front: a stream window's held text.

The window runs its rules over everything it holds on every batch, so a span that straddles events is still
found whole. Most batches add a few characters to a few hundred already checked, and most text holds nothing:
what decides that is the checker's necessary conditions (an `@` for an e-mail, 17 digits in a row for an ID
number, the literal words of its patterns), each a search for a stretch of bounded width. A text known not to
hold such a stretch holds it after growing only if the last `width - 1` old characters and the new ones do; and
cutting text off the front never adds one. So `GrowingScan` remembers which conditions the text lacked at the
last scan and, for those, searches only the seam and the new characters; when every detector and the literal
filter are ruled out that way there is nothing to find. Otherwise (a condition holds, or a checker has a pattern
without a literal) it runs the checker's full `hits`, so the result is always exactly `hits(text)`.

Only what the last call evaluated is kept (a condition it skipped, because an earlier one already decided, is
searched in full next time). When the window rewrites held text (a mask, a webhook's rewrite) it says that none
of the text is what was read before (`fresh` 0), and every condition is searched in full.
"""

from __future__ import annotations

from collections.abc import Callable

from .detectors import CONDITIONS, WIDTHS
from .rules import Hit, RulesChecker

_NON_ASCII = "non-ascii"  # lower-cased literals decide only on ASCII text: its absence is a condition too
_LITERALS = "literals"


def _non_ascii(text: str) -> bool:
    return not text.isascii()


class GrowingScan:
    """`hits` of one checker over one stream's held text, batch by batch."""

    __slots__ = ("_absent", "_checker", "_detectors", "_literals", "_width")

    def __init__(self, checker: RulesChecker):
        self._checker = checker
        self._absent: frozenset[str] = frozenset()  # conditions the text before `fresh` is known not to meet
        # Each detector's conditions, then the literal filter's (absent when some pattern has no literal word).
        self._detectors = tuple(tuple((name, CONDITIONS[name]) for name in d.needs) for d in checker.detectors)
        literals = checker.literals
        self._literals: tuple[tuple[str, Callable[[str], bool]], ...] | None = None
        widths = [WIDTHS[name] for d in checker.detectors for name in d.needs]
        if literals is not None:
            self._literals = ((_NON_ASCII, _non_ascii),) if literals.folded else ()
            self._literals += ((_LITERALS, literals.occurs),)
            widths.append(literals.width)
        # One seam wide enough for every condition: a wider one only repeats what is known to be absent.
        self._width = max(widths, default=1)

    def hits(self, text: str, fresh: int) -> list[Hit]:
        """`checker.hits(text)`, where `text[:fresh]` is what is left of the text of the previous call."""
        absent = self._absent
        # Only a stretch reaching into the new text can hold a condition known to be absent before it.
        seam = text[fresh - self._width + 1 :] if fresh >= self._width else text
        seen: dict[str, bool] = {}
        possible = False
        for needs in self._detectors:
            for name, condition in needs:
                value = seen.get(name)
                if value is None:
                    value = seen[name] = condition(seam if name in absent else text)
                if not value:
                    break
            else:
                possible = True  # this detector may match (a detector without conditions always may)
                break
        if not possible and self._checker.searches:
            literals = self._literals
            if literals is None:
                possible = True  # some pattern has no literal word: only running it tells
            else:
                for name, condition in literals:  # non-ASCII text (folded literals decide on ASCII only), words
                    value = seen[name] = condition(seam if name in absent else text)
                    if value:
                        possible = True
                        break
        # What this call did not evaluate is not known for the text it leaves behind: forget it.
        self._absent = frozenset(name for name, value in seen.items() if not value)
        return self._checker.hits(text) if possible else []
