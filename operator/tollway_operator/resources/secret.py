"""Kubernetes Secrets as the compiler sees them: decoded string values by namespace and name."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from .common import CRDoc


class SecretStore:
    def __init__(self, docs: Iterable[CRDoc] = ()):
        self._data: dict[str, dict[str, str]] = {}
        self.problems: dict[str, list[str]] = {}
        for doc in docs:
            self._add(doc)

    def _add(self, doc: CRDoc) -> None:
        values: dict[str, str] = {}
        problems: list[str] = []
        for key, raw in (doc.body.get("data") or {}).items():
            try:
                values[str(key)] = base64.b64decode(str(raw), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                problems.append(f"secret {doc.name!r} key {key!r} is not base64-encoded UTF-8")
        for key, value in (doc.body.get("stringData") or {}).items():
            values[str(key)] = str(value)  # stringData wins, as the API server merges it
        self._data[doc.qualified_name] = values
        if problems:
            self.problems[doc.qualified_name] = problems

    def get(self, qualified_name: str) -> dict[str, str] | None:
        return self._data.get(qualified_name)

    def names(self) -> list[str]:
        return sorted(self._data)
