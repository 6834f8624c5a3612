"""The chart ships the same CRDs as crds/ (one source of truth), valid values, and a data plane whose arguments
`tollway run` accepts, with a value for every flag a deployment needs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from tollway_cli.main import build_parser

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


# `tollway run` flags the chart leaves out on purpose: the config sources other than the ConfigMap, the API
# server address (in-cluster), and the poll interval (the ConfigMap watch notifies; polling is its fallback).
NOT_FOR_DEPLOYMENTS = {"-h", "--help", "--crs", "--config", "--secrets", "--kubeconfig", "--reload-interval"}


def run_options() -> set[str]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {option for action in commands.choices["run"]._actions for option in action.option_strings}


def test_the_dataplane_template_has_every_run_flag_a_deployment_needs() -> None:
    template = (CHART / "templates" / "dataplane.yaml").read_text()
    missing = sorted(o for o in run_options() - NOT_FOR_DEPLOYMENTS if f"- {o}" not in template)
    assert not missing, f"tollway run flags the chart cannot set: {missing}"


def helm() -> str:
    """The helm the API-server tier builds (cached outside the repo), else one on PATH."""
    directory = os.environ.get("TOLLWAY_K8S_BIN")
    if not directory:
        script = ROOT / "e2e" / "controlplane" / "build.sh"
        printed = subprocess.run(["bash", str(script), "--print-bin-dir"], check=True, capture_output=True, text=True)
        directory = printed.stdout.strip().splitlines()[-1]
    found = Path(directory) / "helm"
    if os.access(found, os.X_OK):
        return str(found)
    path = shutil.which("helm")
    if path is None:
        message = "helm is not built (make controlplane builds it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOT CHECKED: {message}")
    return path


def render(*values: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    args = [a for value in values for a in ("--set", value)]
    return subprocess.run(
        [helm(), "template", "t", str(CHART), "--namespace", "gw", *args],
        check=check,
        capture_output=True,
        text=True,
    )


def dataplane_args(*values: str) -> list[str]:
    documents = [d for d in yaml.safe_load_all(render(*values).stdout) if d]
    deployment = next(
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-tollway-dataplane"
    )
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_dataplane_args_are_what_tollway_run_reads() -> None:
    args = dataplane_args()
    parsed = build_parser().parse_args(args)  # exits on a flag or value `tollway run` does not take
    assert (parsed.cache_max_bytes, parsed.responses_ttl) == (256 * 1024**2, 3600.0)
    assert (parsed.log_prompts, parsed.no_access_log, parsed.metrics_consumer_label) == (False, False, "on")
    assert parsed.max_body_bytes == 10 * 1024**2
    values = [
        "dataplane.cacheMaxBytes=1073741824",  # a plain number stays digits (helm would write 1.073741824e+09)
        "dataplane.responsesTtl=30m",
        "dataplane.logPrompts=true",
        "dataplane.logTextLimit=500",
        "dataplane.accessLog=false",
        "dataplane.metricsConsumerLabel=cap:50",
        "dataplane.maxBodyBytes=2097152",
    ]
    args = dataplane_args(*values)
    assert "--cache-max-bytes=1073741824" in args
    parsed = build_parser().parse_args(args)
    assert (parsed.cache_max_bytes, parsed.responses_ttl, parsed.max_body_bytes) == (1024**3, 1800.0, 2 * 1024**2)
    assert (parsed.log_prompts, parsed.log_text_limit, parsed.no_access_log) == (True, 500, True)
    assert parsed.metrics_consumer_label == "cap:50"
    assert "--cache-max-bytes=64Mi" in dataplane_args("dataplane.cacheMaxBytes=64Mi")


@pytest.mark.parametrize(
    "value",
    ["dataplane.responsesTtl=1hour", "dataplane.cacheMaxBytes=256MB!", "dataplane.logTextLimit=-1"],
)
def test_dataplane_values_are_validated(value: str) -> None:
    proc = render(value, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
