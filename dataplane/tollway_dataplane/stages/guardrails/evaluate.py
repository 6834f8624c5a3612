"""Run checkers on texts, concurrently, each within the guardrails' timeout, and combine what they say.

Used by the request side, by whole answers and by each window of a stream, so every path treats a timeout, an
unreachable service and a finding the same way (verdict.effect_of) and records them in the request's ledger.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from ..poolclient import PoolCallError
from .rules import RulesChecker
from .verdict import BLOCK, MASK, CheckContext, CheckerRuntime, Effect, Ledger, Result, effect_of

log = logging.getLogger("tollway.guardrails")
CONFLICT_CATEGORY = "conflicting-rewrites"


@dataclass(slots=True)
class Decision:
    blocked: Effect | None = None  # the first block, when any checker blocked
    rewrites: list[tuple[CheckerRuntime, list[str]]] = field(default_factory=list)  # masks by rewriting checkers


async def run_one(checker: CheckerRuntime, texts: list[str], context: CheckContext, time_limit: float) -> Result:
    """The checker's result; an error or timeout becomes a result with `error` set, never an exception."""
    try:
        async with asyncio.timeout(time_limit):
            return await checker.check(texts, context)
    except TimeoutError:
        return Result(error="timeout")
    except PoolCallError as exc:
        return Result(error=exc.reason)
    except aiohttp.ClientError:
        return Result(error="reset")
    except Exception:
        # A checker bug must not take the request down with a 500; it counts as the checker failing.
        log.exception("guardrail checker failed", extra={"checker": checker.name, "request_id": context.request_id})
        return Result(error="internal")


async def _timed(
    checker: CheckerRuntime, texts: list[str], context: CheckContext, time_limit: float
) -> tuple[Result, float]:
    started = time.perf_counter()
    result = await run_one(checker, texts, context, time_limit)
    return result, time.perf_counter() - started


async def evaluate(
    checkers: Sequence[CheckerRuntime],
    texts_for: Sequence[list[str]],
    context: CheckContext,
    *,
    time_limit: float,
    failure_policy: str,
    ledger: Ledger,
) -> Decision:
    """`texts_for[i]` are the texts checker i reads. Remote checkers run concurrently; in-process ones inline."""
    results: list[Result | None] = [None] * len(checkers)
    elapsed = [0.0] * len(checkers)
    remote = []
    for i, checker in enumerate(checkers):
        if not any(texts_for[i]):
            continue
        if checker.remote:
            remote.append(i)
        else:
            started = time.perf_counter()
            if isinstance(checker, RulesChecker):  # no coroutine to make and await
                results[i] = checker.check_now(texts_for[i])
            else:
                results[i] = await checker.check(texts_for[i], context)
            elapsed[i] = time.perf_counter() - started
    if remote:
        timed = await asyncio.gather(*(_timed(checkers[i], texts_for[i], context, time_limit) for i in remote))
        for i, (result, seconds) in zip(remote, timed, strict=True):
            results[i], elapsed[i] = result, seconds
    decision = Decision()
    rewritten: dict[str, str] = {}  # original -> rewritten, by the remote checkers so far
    for i, (checker, found) in enumerate(zip(checkers, results, strict=True)):
        if found is None:
            continue  # nothing in its scope to read
        effect = effect_of(checker.config, found, failure_policy)
        if effect.texts is not None and checker.remote and _conflicts(rewritten, texts_for[i], effect.texts):
            # Two servers rewrote the same text differently: neither version has the other's masks.
            effect = Effect(BLOCK, (CONFLICT_CATEGORY,))
        ledger.record(checker.config, context.direction, found, effect, elapsed[i])
        if effect.action == BLOCK and decision.blocked is None:
            decision.blocked = effect
        elif effect.action == MASK and effect.texts is not None:
            decision.rewrites.append((checker, effect.texts))
    return decision


def _conflicts(rewritten: dict[str, str], originals: list[str], texts: list[str]) -> bool:
    for original, text in zip(originals, texts, strict=True):
        if text != original and rewritten.setdefault(original, text) != text:
            return True
    return False
