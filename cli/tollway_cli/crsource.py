"""Custom resource files as a data-plane config source (`tollway run --crs DIR`).

The files are compiled exactly as the operator compiles the cluster's objects, so what a user runs locally is
what the cluster serves. It lives in the composition layer because it joins the planes: the operator's compiler
feeds the data plane's reloader.
"""

from __future__ import annotations

from pathlib import Path

from tollway_dataplane.sources import FilesFingerprint, Loaded
from tollway_operator.compiler import compile_crs, load_documents


class CRDirectorySource:
    """Custom resource YAML files (what a user would `kubectl apply`), compiled as the operator would."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._fingerprint = FilesFingerprint()

    def describe(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    def fingerprint(self) -> object:
        return self._fingerprint(self.paths)

    def load(self) -> Loaded:
        result = compile_crs(load_documents(self.paths))
        notes = []
        for ref, status in sorted(result.statuses.items()):
            for condition in status.conditions():
                if condition.status != "True" or condition.reason == "AcceptedWithWarnings":
                    notes.append(f"{ref}: {condition.type}={condition.status}: {condition.message}")
        return Loaded(result.config, result.secrets, tuple(notes))
