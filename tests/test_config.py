"""The config contract: validation messages name the bad field's path; JSON and YAML both load."""

from __future__ import annotations

from pathlib import Path

import pytest
from tollway_contract import ConfigError, config_from_dict, load_config_file

VALID = {
    "version": 1,
    "pools": [
        {"name": "ns/p", "provider": "openai", "baseURL": "https://api.openai.com/v1", "keys": [{"id": "ns/s/k"}]}
    ],
    "routes": [{"name": "ns/r", "rules": [{"models": ["m"], "backends": [{"pool": "ns/p", "weight": 2}]}]}],
    "consumers": [{"name": "ns/c", "keyHashes": ["a" * 64]}],
}


def problems(doc: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    return info.value.problems


def test_valid_document_loads() -> None:
    config = config_from_dict(VALID)
    assert config.routes[0].rules[0].backends[0].weight == 2


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(version=2), "version: must be 1"),
        (lambda d: d["pools"][0].update(provider="nope"), "pools[0].provider: must be one of"),
        (lambda d: d["pools"][0].update(baseURL="ftp://x"), "pools[0].baseURL: must start with http"),
        (
            lambda d: d["routes"][0]["rules"][0]["backends"][0].update(pool="ns/q"),
            "routes[0].rules[0].backends[0].pool: unknown pool 'ns/q'",
        ),
        (
            lambda d: d["routes"][0]["rules"][0]["backends"][0].update(weight="x"),
            "routes[0].rules[0].backends[0].weight: must be an integer",
        ),
        (
            lambda d: d["routes"][0]["rules"][0].update(models=[]),
            "routes[0].rules[0].models: must name at least one model",
        ),
        (
            lambda d: d["consumers"][0].update(keyHashes=["nothex"]),
            "consumers[0].keyHashes[0]: must be a lower-case SHA-256",
        ),
        (lambda d: d["pools"].append(dict(d["pools"][0])), "pools[1].name: duplicate name 'ns/p'"),
        (
            lambda d: d.update(rateLimits=[{"name": "x", "limits": [{"window": 60}]}]),
            "rateLimits[0].limits[0]: must set exactly one of tokens, requests or usd",
        ),
        (lambda d: d.update(routes="oops"), "routes: must be a list, got a string"),
    ],
)
def test_problems_name_the_field(mutate: object, expected: str) -> None:
    import copy

    doc = copy.deepcopy(VALID)
    mutate(doc)  # type: ignore[operator]
    found = problems(doc)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    doc = {"version": 1, "pools": [{"provider": "x"}], "routes": [{"name": "r", "rules": []}]}
    assert len(problems(doc)) >= 3


def test_yaml_and_json_files(tmp_path: Path) -> None:
    import json

    import yaml

    (tmp_path / "c.json").write_text(json.dumps(VALID))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(VALID))
    assert load_config_file(tmp_path / "c.json") == load_config_file(tmp_path / "c.yaml")
    (tmp_path / "bad.yaml").write_text("version: [1")
    with pytest.raises(ConfigError, match="not valid JSON or YAML"):
        load_config_file(tmp_path / "bad.yaml")
