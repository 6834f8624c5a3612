"""Shared pieces for reading custom resources: the document wrapper and a spec reader that knows durations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tollway_contract.reader import FieldReader, join_path

from ..durations import parse_duration
from ..status import ObjectRef, ObjectStatus

GROUP = "tollway.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = ("ProviderKeyPool", "AIRoute", "Consumer", "TokenRateLimit")


@dataclass(frozen=True)
class CRDoc:
    """One custom resource (or Secret) document, with the metadata the compiler needs."""

    kind: str
    namespace: str
    name: str
    generation: int | None
    labels: dict[str, str]
    body: dict[str, Any]

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CRDoc:
        meta = doc.get("metadata") or {}
        labels = meta.get("labels") or {}
        return cls(
            kind=str(doc.get("kind")),
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            generation=meta.get("generation"),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            body=doc,
        )

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(self.kind, self.namespace, self.name)

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def qualify(self, name: str) -> str:
        """A same-namespace reference as the config names it."""
        return f"{self.namespace}/{name}"

    def new_status(self) -> ObjectStatus:
        return ObjectStatus(ref=self.ref, generation=self.generation)


class SpecReader(FieldReader):
    """A FieldReader for CR specs: durations are strings such as "30s"."""

    def duration(
        self, data: dict[str, Any], key: str, path: str, *, minimum: float = 0.001, maximum: float | None = None
    ) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.fail(join_path(path, key), str(exc))
            return None
        if seconds < minimum or (maximum is not None and seconds > maximum):
            bound = f"between {minimum:g}s and {maximum:g}s" if maximum else f"at least {minimum:g}s"
            self.fail(join_path(path, key), f"{value} is out of range: must be {bound}")
            return None
        return seconds


def spec_of(doc: CRDoc, reader: FieldReader) -> dict[str, Any]:
    return reader.obj(doc.body.get("spec"), "spec")
