"""The `llm-judge` checker: a guard model served OpenAI-compatibly (vLLM, ...) through a pool, one parser per format.

The model's chat template builds the task prompt, so the call is a plain chat completion: `[user]` to judge a
prompt, `[user, assistant]` to judge an answer (the caller's last user text, then the answer). Each parser turns
the model's words into a severity and categories:

  llama-guard       "safe" | "unsafe\\nS1,S10"                      -> unsafe, [S1, S10]
  qwen3guard        "Safety: Unsafe|Controversial\\nCategories: ..." -> unsafe | controversial, [Violent, ...]
  granite-guardian  "<score> yes </score>" (after an optional <think>) -> unsafe, [risk]
  shieldgemma       "Yes" | "No"                                    -> unsafe, [policy]

`blockOn` names the severities or categories that count (any of either, case-insensitive); empty counts every
verdict that is not safe, Qwen3Guard's Controversial included (`blockOn: [unsafe]` lets it through).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tollway_contract.model import Checker, JudgeSettings

from ..poolclient import PoolClient
from .verdict import CheckContext, Result

Verdict = tuple[str, tuple[str, ...]]  # severity ("safe", "unsafe", "controversial"), categories


class Unparseable(ValueError):
    pass


def parse_llama_guard(text: str) -> Verdict:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        raise Unparseable("expected safe or unsafe")
    if lines[0].lower() == "safe":
        return "safe", ()
    categories = tuple(c.strip() for c in lines[1].split(",") if c.strip()) if len(lines) > 1 else ()
    return "unsafe", categories


_QWEN_SAFETY = re.compile(r"Safety:\s*(Safe|Unsafe|Controversial)", re.IGNORECASE)
_QWEN_CATEGORIES = re.compile(r"Categories:\s*(.*)", re.IGNORECASE)


def parse_qwen3guard(text: str) -> Verdict:
    safety = _QWEN_SAFETY.search(text)
    if safety is None:
        raise Unparseable("expected 'Safety: Safe|Unsafe|Controversial'")
    found = _QWEN_CATEGORIES.search(text)
    categories = tuple(
        c.strip() for c in (found.group(1).split(",") if found else ()) if c.strip() and c.strip().lower() != "none"
    )
    return safety.group(1).lower(), categories


_GRANITE_SCORE = re.compile(r"<score>\s*(yes|no)\s*</score>", re.IGNORECASE)


def parse_granite_guardian(text: str) -> Verdict:
    scores = _GRANITE_SCORE.findall(text)
    if not scores:
        raise Unparseable("expected '<score> yes|no </score>'")
    return ("unsafe", ("risk",)) if scores[-1].lower() == "yes" else ("safe", ())


def parse_shieldgemma(text: str) -> Verdict:
    word = text.strip().split(maxsplit=1)[0].strip(".,:;!").lower() if text.strip() else ""
    if word not in ("yes", "no"):
        raise Unparseable("expected Yes or No")
    return ("unsafe", ("policy",)) if word == "yes" else ("safe", ())


PARSERS: dict[str, Callable[[str], Verdict]] = {
    "llama-guard": parse_llama_guard,
    "qwen3guard": parse_qwen3guard,
    "granite-guardian": parse_granite_guardian,
    "shieldgemma": parse_shieldgemma,
}


class JudgeChecker:
    remote = True

    def __init__(self, checker: Checker, client: PoolClient | None):
        settings = checker.settings
        assert isinstance(settings, JudgeSettings)
        self.config = checker
        self.name = checker.name
        self._settings = settings
        self._client = client
        self._parse = PARSERS[settings.format]
        self._block_on = frozenset(x.lower() for x in settings.block_on)

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        text = "\n\n".join(t for t in texts if t)
        if not text:
            return Result()
        if self._client is None:
            return Result(error="pool-missing")
        if context.direction == "response":
            messages = [{"role": "user", "content": context.prompt}, {"role": "assistant", "content": text}]
        else:
            messages = [{"role": "user", "content": text}]
        body: dict[str, Any] = {"model": self._settings.model, "messages": messages, "temperature": 0, "max_tokens": 64}
        answer = await self._client.chat(body)
        try:
            severity, categories = self._parse(_content(answer))
        except Unparseable:
            return Result(error="unparseable")
        if severity == "safe" or not self._counts(severity, categories):
            return Result()
        return Result(categories=categories or (severity,))

    def _counts(self, severity: str, categories: tuple[str, ...]) -> bool:
        if not self._block_on:
            return True
        return severity in self._block_on or any(c.lower() in self._block_on for c in categories)


def _content(answer: dict[str, Any]) -> str:
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""
