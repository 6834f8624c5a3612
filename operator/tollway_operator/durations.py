"""Go-style durations ("500ms", "30s", "1h30m", "30d") as used in the CRDs."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in `text`; raises ValueError with a readable message when it is not a duration."""
    if not isinstance(text, str) or not _WHOLE.match(text):
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 30s, 1m, 1h30m, 30d)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
