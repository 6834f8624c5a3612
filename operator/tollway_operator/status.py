"""What the compiler tells each custom resource about itself: conditions with reasons that name the problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class ObjectRef(NamedTuple):
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


@dataclass
class ObjectStatus:
    """Problems found while compiling one object. `rejected` objects are left out of the config entirely."""

    ref: ObjectRef
    generation: int | None = None
    invalid: list[str] = field(default_factory=list)  # the spec itself is wrong -> Accepted=False
    unresolved: list[str] = field(default_factory=list)  # a reference does not resolve -> ResolvedRefs=False
    warnings: list[str] = field(default_factory=list)  # accepted, but something is shadowed or ignored
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific status fields (keyCount, ...)

    @property
    def rejected(self) -> bool:
        return bool(self.invalid)

    def conditions(self) -> list[Condition]:
        if self.invalid:
            accepted = Condition("Accepted", "False", "Invalid", "; ".join(self.invalid))
        elif self.warnings:
            accepted = Condition("Accepted", "True", "AcceptedWithWarnings", "; ".join(self.warnings))
        else:
            accepted = Condition("Accepted", "True", "Accepted", "the spec is valid")
        if self.unresolved:
            resolved = Condition("ResolvedRefs", "False", "UnresolvedRefs", "; ".join(self.unresolved))
        else:
            resolved = Condition("ResolvedRefs", "True", "ResolvedRefs", "all references resolve")
        return [accepted, resolved]
