"""What the operator writes into each custom resource's status, and whether it needs writing at all.

Pure functions: the compiler's findings (`ObjectStatus`) plus whether the written config carries the object
become `status.conditions` (Accepted, ResolvedRefs, Programmed, in metav1.Condition shape), `observedGeneration`,
`configHash` and the kind's summary fields. `lastTransitionTime` moves only when a condition's status changes,
and a status that already says the same thing is not patched again, so a render that changes nothing writes
nothing and emits no events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .status import Condition, ObjectStatus

# The status fields this operator owns. Anything else in .status is left alone.
MANAGED_FIELDS = (
    "observedGeneration",
    "configHash",
    "conditions",
    "keyCount",
    "endpointCount",
    "models",
    "modelsSummary",
    "credentialCount",
    "limitsSummary",
)
OWN_CONDITIONS = ("Accepted", "ResolvedRefs", "Programmed")
# Bounds from the CRDs' status schemas (metav1.Condition and the summary fields).
MAX_MESSAGE = 32768
MAX_REASON = 1024
MAX_SUMMARY = {"modelsSummary": 256, "limitsSummary": 1024}
MAX_MODELS = 4096


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def programmed_condition(status: ObjectStatus, in_config: bool) -> Condition:
    """Programmed: True once a written config carries the object; False with the reason it is left out."""
    if in_config:
        return Condition("Programmed", "True", "Programmed", "the data-plane config carries this object")
    if status.rejected:
        return Condition("Programmed", "False", "Invalid", "not programmed: the spec is invalid (see Accepted)")
    detail = "; ".join(status.unresolved) or "it does not compile into the config"
    return Condition("Programmed", "False", "UnresolvedRefs", f"not programmed: {detail}")


def merge_conditions(current: Any, new: list[Condition], generation: int | None, now: str) -> list[dict[str, Any]]:
    """`new` in metav1.Condition shape. A condition whose status is unchanged keeps its lastTransitionTime;
    conditions of other types (someone else's) are kept as they are, after ours."""
    previous = {c.get("type"): c for c in current or () if isinstance(c, dict)}
    merged: list[dict[str, Any]] = []
    for condition in new:
        before = previous.get(condition.type)
        unchanged = before is not None and before.get("status") == condition.status
        item: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason[:MAX_REASON],
            "message": _truncate(condition.message, MAX_MESSAGE),
            "lastTransitionTime": (before or {}).get("lastTransitionTime") if unchanged else now,
        }
        if item["lastTransitionTime"] is None:
            item["lastTransitionTime"] = now
        if generation is not None:
            item["observedGeneration"] = generation
        merged.append(item)
    ours = {c.type for c in new}
    merged.extend(c for t, c in previous.items() if t not in ours)
    return merged


def desired_status(
    status: ObjectStatus,
    *,
    in_config: bool,
    config_hash: str | None,
    current: dict[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    """The managed part of .status for one object. `config_hash` is the config that carries it (None: none)."""
    current = current or {}
    conditions = [*status.conditions(), programmed_condition(status, in_config)]
    desired: dict[str, Any] = {
        "observedGeneration": status.generation,
        "configHash": config_hash if in_config else None,
        "conditions": merge_conditions(current.get("conditions"), conditions, status.generation, now),
    }
    for key, value in status.extra.items():
        if key in MAX_SUMMARY and isinstance(value, str):
            value = _truncate(value, MAX_SUMMARY[key])
        elif key == "models" and isinstance(value, list):
            value = value[:MAX_MODELS]
        desired[key] = value
    return desired


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch for .status (None for a field removes it), or None when nothing changes."""
    current = current or {}
    patch = {}
    for key in MANAGED_FIELDS:
        want, have = desired.get(key), current.get(key)
        if want != have:
            patch[key] = want
    return patch or None


def failing_transitions(before: Any, after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accepted/ResolvedRefs conditions that became False (or changed their message while False): worth an Event."""
    previous = {c.get("type"): c for c in before or () if isinstance(c, dict)}
    out = []
    for condition in after:
        if condition["type"] not in ("Accepted", "ResolvedRefs") or condition["status"] != "False":
            continue
        old = previous.get(condition["type"]) or {}
        if old.get("status") != "False" or old.get("message") != condition["message"]:
            out.append(condition)
    return out


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
