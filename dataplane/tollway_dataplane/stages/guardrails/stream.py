"""The stream window: a streamed answer's text is held back until it is older than `stream.window` characters and
every checker has passed it, so a span can still be masked (or the answer cut) before the caller sees any of it.

Events are held whole and in order; an event's text is released once at least a window's worth of text follows
it and the remote checkers cleared it. Events without text (the role, tool-call deltas, the finish, usage, the
end) go out as soon as everything before them has. Per batch:

1. a finished remote check is applied (a block ends the stream; a webhook's rewrite replaces the text it read);
2. the rules run over all held text: a block ends the stream, a mask rewrites held text across event boundaries
   (a match touching the end of the held text waits for the next batch: it may still grow); what decides that
   nothing can match is only searched for again where the new text meets the old (growing.py);
3. once a window's worth of text nobody has checked yet is held, the remote checkers get it (with the window
   before it as context, for classifiers), at most one call in flight per stream;
4. what is old enough and cleared is released; unchanged events go out byte for byte.

When the answer ends, the last check is awaited, the rest is checked and everything left is released. A block
ends the stream with the dialect's content_filter finish and end events. The added time to first token is the
time the upstream takes to produce a window of text (plus a remote check of the first window).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from tollway_contract.model import Guardrails

from ..base import EndStream
from .evaluate import Decision, evaluate
from .growing import GrowingScan
from .rules import Hit, RulesChecker
from .verdict import AUDIT, BLOCK, MASK, PASS, CheckContext, CheckerRuntime, Effect, Ledger, Result
from .view import AnswerView

_WEIGHT = {PASS: 0, AUDIT: 1, MASK: 2, BLOCK: 3}


@dataclass(slots=True)
class _Held:
    event: bytes
    text: str  # the text it adds ("" for none)
    cleared: bool  # the remote checkers passed it (True when there are none or it has no text)
    changed: bool = False
    sent: bool = False  # in the remote check in flight
    pinned: bool = False  # a mask match that may still grow starts here: hold it and what follows


@dataclass(slots=True)
class _RuleStats:
    action: str = PASS
    categories: dict[str, None] = field(default_factory=dict)
    seconds: float = 0.0


class StreamWindow:
    def __init__(
        self,
        config: Guardrails,
        view: AnswerView,
        checkers: Sequence[CheckerRuntime],
        context: CheckContext,
        ledger: Ledger,
    ):
        self._config = config
        self._window = config.stream_window
        self._view = view
        self._out = view.stream()
        self._rules = [c for c in checkers if isinstance(c, RulesChecker)]
        self._scans = [GrowingScan(c) for c in self._rules]
        self._remote = [c for c in checkers if c.remote]
        self._context = context
        self._ledger = ledger
        self._held: deque[_Held] = deque()
        self._text = ""  # the held events' text, in order: what the rules read
        self._fresh = 0  # self._text[:self._fresh] is what is left of the text the rules read last
        self._pinned = False  # some held event is pinned
        self._first: bytes | None = None  # the first event: its id, model and creation time go on the block events
        self._task: asyncio.Task[Decision] | None = None
        self._in_check: list[_Held] = []
        self._context_tail = ""  # the end of the text checked last, as context for the next window
        self._rule_stats = {c.name: _RuleStats() for c in self._rules}
        self.blocked = False

    # -- the filter's calls -----------------------------------------------------------------------------------

    async def feed(self, events: list[bytes]) -> list[bytes]:
        if self._hold(events):
            return await self._flush()
        return self._step()

    def feed_now(self, events: list[bytes]) -> list[bytes] | None:
        """`feed` for windows with the rules alone: nothing to await, not even at the end."""
        if self._remote:
            return None
        if self._hold(events):
            return self._end_locally()
        return self._step()

    def _hold(self, events: list[bytes]) -> bool:
        """Hold the batch's events; whether one of them ends the answer."""
        ends = False
        for event in events:
            text = self._view.event_text(event) or ""
            self._held.append(_Held(event, text, cleared=not (text and self._remote)))
            if text:
                self._text += text
            if self._first is None:
                self._first = event
            ends = ends or self._view.ends_answer(event)
        return ends

    def _step(self) -> list[bytes]:
        effect = self._collect() or self._scan(final=False)
        if effect is not None:
            raise EndStream(self._block(effect))
        self._dispatch()
        return self._release(final=False)

    async def finish(self) -> list[bytes]:
        """The upstream ended: what is still owed (everything left, or the block events)."""
        if not self._held and self._task is None:
            return []
        try:
            return await self._flush()
        except EndStream as end:
            return end.events

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for checker in self._rules:
            stats = self._rule_stats[checker.name]
            categories = tuple(stats.categories)
            effect = Effect(stats.action, categories)
            self._ledger.record(checker.config, "response", Result(categories=categories), effect, stats.seconds)

    # -- steps ----------------------------------------------------------------------------------------------

    async def _flush(self) -> list[bytes]:
        """The answer is complete: check what is left, then release everything (or raise EndStream)."""
        if not self._remote:
            return self._end_locally()
        effect = await self._await_check()
        effect = effect or self._scan(final=True)
        if effect is None:
            pending = [h for h in self._held if h.text and not h.cleared and not h.sent]
            if pending:
                self._start_check(pending)
                effect = await self._await_check()
                effect = effect or self._scan(final=True)  # a webhook's rewrite is masked like any text
        return self._conclude(effect)

    def _end_locally(self) -> list[bytes]:
        """`_flush` with no remote checker (so no check in flight): the last scan, then everything."""
        return self._conclude(self._scan(final=True))

    def _conclude(self, effect: Effect | None) -> list[bytes]:
        if effect is not None:
            raise EndStream(self._block(effect))
        return self._release(final=True)

    def _collect(self) -> Effect | None:
        """Apply the remote check in flight if it is done."""
        task = self._task
        if task is None or not task.done():
            return None
        self._task = None
        return self._apply(task.result())

    async def _await_check(self) -> Effect | None:
        task = self._task
        if task is None:
            return None
        self._task = None
        return self._apply(await task)

    def _apply(self, decision: Decision) -> Effect | None:
        held = self._in_check
        self._in_check = []
        if decision.blocked is not None:
            return decision.blocked
        for _, texts in decision.rewrites:  # a webhook rewrote the window it read: it replaces those events' text
            new = texts[-1]
            for i, h in enumerate(held):
                h.text = new if i == 0 else ""
                h.changed = True
            self._rewritten()
        for h in held:
            h.cleared = True
            h.sent = False
        return None

    def _scan(self, *, final: bool) -> Effect | None:
        """The rules over all held text: a block, or masks applied in place."""
        if not self._rules:
            return None
        if self._pinned:
            for h in self._held:
                h.pinned = False
            self._pinned = False
        buffer = self._text
        if not buffer:
            return None
        for checker, scan in zip(self._rules, self._scans, strict=True):
            started = time.perf_counter()
            hits = scan.hits(buffer, self._fresh)
            stats = self._rule_stats[checker.name]
            action = checker.config.action
            if hits:
                for hit in hits:
                    stats.categories.setdefault(hit.category)
                if action == "block":
                    stats.action = BLOCK
                    stats.seconds += time.perf_counter() - started
                    return Effect(BLOCK, tuple(dict.fromkeys(h.category for h in hits)))
                if action == "mask":
                    ready = [h for h in hits if final or h.end < len(buffer)]
                    if len(ready) < len(hits):  # only the last match can touch the end
                        self._pin(hits[-1].start)
                    if ready:
                        self._mask(ready)
                        buffer = self._text
                        stats.action = MASK if _WEIGHT[MASK] > _WEIGHT[stats.action] else stats.action
                elif _WEIGHT[AUDIT] > _WEIGHT[stats.action]:
                    stats.action = AUDIT
            stats.seconds += time.perf_counter() - started
        self._fresh = len(self._text)
        return None

    def _rewritten(self) -> None:
        """Held text was rewritten: the text the rules read is rebuilt, and read whole next time (fresh 0)."""
        self._text = "".join(h.text for h in self._held)
        self._fresh = 0

    def _starts(self) -> list[int]:
        starts = []
        position = 0
        for h in self._held:
            starts.append(position)
            position += len(h.text)
        return starts

    def _pin(self, offset: int) -> None:
        self._held[_event_at(self._starts(), offset)].pinned = True
        self._pinned = True

    def _mask(self, hits: list[Hit]) -> None:
        """Replace buffer spans in the held events; a span may cover several events (the replacement goes to the
        first, the others lose their part). Right to left, so earlier offsets stay valid."""
        starts = self._starts()
        held = self._held
        for hit in reversed(hits):
            first = _event_at(starts, hit.start)
            last = _event_at(starts, hit.end - 1)
            head = held[first].text[: hit.start - starts[first]]
            tail = held[last].text[hit.end - starts[last] :]
            if first == last:
                held[first].text = head + hit.replacement + tail
            else:
                held[first].text = head + hit.replacement
                for i in range(first + 1, last):
                    held[i].text = ""
                    held[i].changed = True
                held[last].text = tail
                held[last].changed = True
            held[first].changed = True
        self._rewritten()

    def _dispatch(self) -> None:
        """Send a window's worth of unchecked text to the remote checkers, unless a check is in flight."""
        if not self._remote or self._task is not None:
            return
        pending = [h for h in self._held if h.text and not h.cleared and not h.sent]
        if sum(len(h.text) for h in pending) >= self._window:
            self._start_check(pending)

    def _start_check(self, pending: list[_Held]) -> None:
        text = "".join(h.text for h in pending)
        for h in pending:
            h.sent = True
        self._in_check = pending
        # Classifiers also read the end of the window before, so a phrase split between windows is seen whole; a
        # rewriting checker reads exactly the text it may replace.
        with_context = self._context_tail + text
        texts_for = [[text] if c.config.type == "webhook" else [with_context] for c in self._remote]
        self._context_tail = with_context[-self._window :]
        config = self._config
        self._task = asyncio.ensure_future(
            evaluate(
                self._remote,
                texts_for,
                self._context,
                time_limit=config.timeout,
                failure_policy=config.failure_policy,
                ledger=self._ledger,
            )
        )

    def _release(self, *, final: bool) -> list[bytes]:
        held = self._held
        out: list[bytes] = []
        limit = len(self._text) - self._window  # text ending at or before this offset is older than the window
        position = 0
        while held:
            h = held[0]
            end = position + len(h.text)
            if not final and (h.pinned or (h.text and (end > limit or not h.cleared))):
                break
            held.popleft()
            out.append(self._out.sent(h.event, h.text if h.changed else None))
            position = end
        if position:
            self._text = self._text[position:]
            self._fresh = max(0, self._fresh - position)
        return out

    def _block(self, effect: Effect) -> list[bytes]:
        self.blocked = True
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._held.clear()
        self._text = ""
        message = (effect.message or self._config.message) if self._config.on_block == "completion" else None
        return self._out.block_events(self._first, message)


def _event_at(starts: list[int], offset: int) -> int:
    """Index of the held event whose text covers buffer `offset` (starts ascending)."""
    low, high = 0, len(starts) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if starts[middle] <= offset:
            low = middle
        else:
            high = middle - 1
    return low
