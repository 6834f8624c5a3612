"""The chart ships the same CRDs as crds/ (one source of truth) and valid values."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "tollway"


def test_chart_crds_match_the_source() -> None:
    source = {p.name: p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    shipped = {p.name: p.read_text() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert source, "crds/ is empty"
    assert shipped == source, "helm/tollway/crds/ drifted from crds/: run `make chart-crds`"


def test_default_values_satisfy_the_schema_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: object, node: dict, path: str) -> None:
        if node.get("type") == "object" and isinstance(value, dict) and node.get("additionalProperties") is False:
            unknown = set(value) - set(node.get("properties", {}))
            assert not unknown, f"{path or 'values'}: keys missing from values.schema.json: {sorted(unknown)}"
            for key, sub in value.items():
                walk(sub, node["properties"][key], f"{path}.{key}" if path else key)

    walk(values, schema, "")
