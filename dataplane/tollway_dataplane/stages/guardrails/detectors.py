"""Built-in PII detectors: what each finds, the placeholder that replaces it, and the check that confirms it.

A regular expression finds candidates; numbers that carry a check digit are confirmed by it (a credit card by
the Luhn sum, a Chinese resident ID by its ISO 7064 MOD 11-2 check character), so a random run of digits is not
masked as a card. Patterns are anchored on what may not touch them (no digit right before a phone number, ...)
so a match never starts inside a longer token. Each detector also has a cheap necessary condition (an `@` for
an e-mail, a digit for a number, a known prefix for a key), checked first: most text has none, and a scan it
skips is the largest part of what a rules guardrail costs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_KEY_PREFIXES = ("sk-", "AKIA", "AIza", "LTAI", "gh", "xox", "eyJ")

_DIGITS_TO_ZERO = bytes(ord("0") if ord("0") <= i <= ord("9") else ord(" ") for i in range(256))


def _digit_run(length: int) -> Callable[[str], bool]:
    """Whether a text holds `length` digits in a row. An ASCII text has only ASCII digits: its bytes mapped to
    "0" for a digit and " " for the rest, then searched, is a memory-speed pass where a regex scan costs ~18 ns a
    character. Other texts may hold any Unicode digit, which `\\d` matches."""
    needle = b"0" * length
    pattern = re.compile(rf"\d{{{length}}}")

    def holds(text: str) -> bool:
        if text.isascii():
            return needle in text.encode("ascii").translate(_DIGITS_TO_ZERO)
        return pattern.search(text) is not None

    return holds


def _has_key_prefix(text: str) -> bool:
    # A loop, not any() over a generator (twice the cost): a stream window asks this of a few characters per batch.
    for prefix in _KEY_PREFIXES:  # noqa: SIM110
        if prefix in text:
            return True
    return False


# The necessary conditions detectors name, each computed at most once per text.
CONDITIONS: dict[str, Callable[[str], bool]] = {
    "at": lambda text: "@" in text,
    "digit": _digit_run(1),
    "digits-17": _digit_run(17),  # as every resident ID number holds: dates, prices and timestamps rarely do
    "dot": lambda text: "." in text,
    "key-prefix": _has_key_prefix,
}
# How long a stretch of text each condition looks for: a text without it that grows by some characters holds it
# only if the last `width - 1` old characters and the new ones do (what a stream window rescans).
WIDTHS: dict[str, int] = {
    "at": 1,
    "digit": 1,
    "digits-17": 17,
    "dot": 1,
    "key-prefix": max(len(prefix) for prefix in _KEY_PREFIXES),
}


def _always(_: str) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Detector:
    name: str  # as configured, and the category a finding is counted under
    placeholder: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] = _always  # confirms a candidate (a check digit)
    needs: tuple[str, ...] = ()  # CONDITIONS the whole text must meet for a match to be possible


def luhn(text: str) -> bool:
    digits = [int(c) for c in text if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, digit in enumerate(reversed(digits)):
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def cn_id_check(text: str) -> bool:
    """GB 11643: the 18th character is the check of the first 17 digits (X stands for 10)."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    total = sum(int(c) * w for c, w in zip(text[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == text[17].upper()


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(
            "email",
            "[EMAIL]",
            # Only where a run of local-part characters begins, and that run taken whole: tried at every position
            # of a long run, the local part rescanned the rest of it each time (quadratic in the run's length:
            # a few seconds of CPU for 20,000 letters and an @; a stream window rescanning its text per batch
            # paid it on every batch). The leftmost match starts at a run's start anyway, so nothing else changes.
            re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
            needs=("at", "dot"),  # the domain ends in a dot and a top-level name
        ),
        # Before phone: a card number or an ID would otherwise contain phone-shaped runs.
        Detector(
            "credit-card", "[CREDIT_CARD]", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), luhn, ("digit",)
        ),
        Detector(
            "cn-id-card",
            "[CN_ID_CARD]",
            re.compile(
                r"(?<!\d)\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])"
            ),
            cn_id_check,
            ("digits-17",),  # 17 digits, then the check character
        ),
        Detector(
            "phone",
            "[PHONE]",
            re.compile(
                # Chinese mobile numbers (with or without +86 and separators), then international and
                # North American forms with separators, so a bare run of digits is not taken for a phone.
                r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"
                r"|(?<![\d+])(?:\+|00)[1-9]\d{0,2}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{1,4}(?:[ -]\d{2,4}){1,4}(?!\d)"
                r"|(?<!\d)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"
            ),
            needs=("digit",),
        ),
        Detector(
            "ipv4",
            "[IPV4]",
            re.compile(
                r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)"
            ),
            needs=("dot", "digit"),
        ),
        Detector(
            "api-key",
            "[API_KEY]",
            re.compile(
                r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|LTAI[A-Za-z0-9]{12,24}"
                r"|gh[pousr]_[A-Za-z0-9]{36,}|xox[abposr]-[A-Za-z0-9-]{10,}"
                r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
            ),
            needs=("key-prefix",),
        ),
    )
}
