"""The CRDs against a real API server: install, admission (schema + CEL), defaults, status, RBAC, helm."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane
from controlplane.cluster import binary_version

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent
CRD_DIR = REPO_ROOT / "crds"
VALID_DIR = E2E_DIR / "fixtures" / "valid"
INVALID_DIR = E2E_DIR / "fixtures" / "invalid"
EXAMPLES_DIR = REPO_ROOT / "examples"
CHART_DIR = REPO_ROOT / "helm" / "tollway"

EXPECTED_CRDS = {
    "providerkeypools.tollway.dev": ("ProviderKeyPool", "tkp"),
    "airoutes.tollway.dev": ("AIRoute", "air"),
    "consumers.tollway.dev": ("Consumer", "tcon"),
    "tokenratelimits.tollway.dev": ("TokenRateLimit", "trl"),
}


# --------------------------------------------------------------------------- collection helpers


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _split_documents(text: str) -> list[str]:
    """Raw YAML documents of a stream, so kubectl sees exactly what a user would apply."""
    return [chunk for chunk in re.split(r"(?m)^---[ \t]*$", text) if yaml.safe_load(chunk) is not None]


def _checked_documents() -> list[Any]:
    """tollway.dev/* and v1 Secret documents from the valid fixtures and examples/ (minus *.local.yaml)."""
    files = sorted(VALID_DIR.glob("*.yaml"))
    if EXAMPLES_DIR.is_dir():
        files += sorted(
            p
            for p in EXAMPLES_DIR.rglob("*.y*ml")
            if p.suffix in (".yaml", ".yml") and not p.name.endswith((".local.yaml", ".local.yml"))
        )
    params = []
    for f in files:
        for i, raw in enumerate(_split_documents(f.read_text())):
            doc = yaml.safe_load(raw)
            if not isinstance(doc, dict):
                continue
            api, kind = str(doc.get("apiVersion", "")), doc.get("kind")
            if api.startswith("tollway.dev/") or (api == "v1" and kind == "Secret"):
                name = (doc.get("metadata") or {}).get("name", "?")
                params.append(pytest.param(f, raw, id=f"{_rel(f)}#{i}-{kind}-{name}"))
    return params


def _invalid_cases() -> list[Any]:
    params = []
    for f in sorted(INVALID_DIR.glob("*.yaml")):
        first = f.read_text().splitlines()[0]
        match = re.match(r"^#\s*expect:\s*(.+?)\s*$", first)
        params.append(pytest.param(f, match.group(1) if match else None, id=f.stem))
    return params


def _dry_run(cp: ControlPlane, doc: dict | str, namespace: str) -> subprocess.CompletedProcess:
    """Server-side dry-run of one document; objects without a namespace go to `namespace`."""
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    doc_ns = (yaml.safe_load(text).get("metadata") or {}).get("namespace")
    args = ["apply", "--dry-run=server", "--server-side", "--field-manager=tollway-e2e", "-o", "json", "-f", "-"]
    if doc_ns:
        # Dry-run admission still needs the namespace to exist.
        cp.kubectl("create", "namespace", doc_ns, check=False)
    else:
        args += ["-n", namespace]
    return cp.kubectl(*args, input=text, check=False)


# --------------------------------------------------------------------------- CRDs


def test_crd_files_present():
    names = set()
    for f in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                assert doc["kind"] == "CustomResourceDefinition", f
                names.add(doc["metadata"]["name"])
    assert names == set(EXPECTED_CRDS)


@pytest.mark.parametrize("crd_file", sorted(CRD_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_crd_installs_and_is_established(control_plane: ControlPlane, crds_installed, crd_file: Path):
    out = control_plane.kubectl(
        "apply", "--server-side", "--field-manager=tollway-e2e", "-f", str(crd_file), "-o", "name"
    )
    for name in out.stdout.split():
        control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
        crd = json.loads(control_plane.kubectl("get", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions
        # Unlike a rejected schema, these surface only as conditions.
        assert conditions.get("NonStructuralSchema") in (None, "False"), crd["status"]["conditions"]
        assert conditions.get("KubernetesAPIApprovalPolicyConformant") in (None, "True")


def test_crd_names_short_names_and_category(control_plane: ControlPlane, crds_installed):
    out = control_plane.kubectl("api-resources", "--api-group=tollway.dev", "-o", "wide").stdout
    for kind, short in EXPECTED_CRDS.values():
        line = next((ln for ln in out.splitlines() if f" {kind} " in f" {ln} "), None)
        assert line, f"{kind} missing from api-resources:\n{out}"
        assert re.search(rf"\b{short}\b", line), line
        assert "tollway" in line, line
        assert "true" in line.split(), f"{kind} should be namespaced: {line}"
    # The category lists every kind at once.
    control_plane.kubectl("get", "tollway", "-A")


# --------------------------------------------------------------------------- admission


@pytest.mark.parametrize("source,doc", _checked_documents())
def test_valid_manifest_passes_server_dry_run(
    control_plane: ControlPlane, crds_installed, namespace: str, source: Path, doc: str
):
    proc = _dry_run(control_plane, doc, namespace)
    assert proc.returncode == 0, f"{_rel(source)} was rejected:\n{proc.stderr}"


def test_invalid_fixture_count():
    cases = _invalid_cases()
    assert len(cases) >= 12
    for case in cases:
        assert case.values[1], f"{case.values[0]} must start with '# expect: <error substring>'"


@pytest.mark.parametrize("fixture,expected", _invalid_cases())
def test_invalid_manifest_is_rejected(
    control_plane: ControlPlane, crds_installed, namespace: str, fixture: Path, expected: str
):
    docs = _split_documents(fixture.read_text())
    assert len(docs) == 1, f"{fixture.name}: one object per invalid case"
    proc = _dry_run(control_plane, docs[0], namespace)
    assert proc.returncode != 0, f"{fixture.name} was accepted but should fail with {expected!r}"
    assert expected in proc.stderr, f"{fixture.name}: expected {expected!r} in:\n{proc.stderr}"


MINIMAL = {
    "ProviderKeyPool": {"provider": "openai", "keys": [{"secretRef": {"name": "k"}}]},
    "AIRoute": {"rules": [{"models": ["gpt-4o"], "backends": [{"pool": "openai"}]}]},
    "Consumer": {"credentials": [{"secretRef": {"name": "c"}}]},
    "TokenRateLimit": {"limits": [{"tokens": 1000, "window": "1m"}], "targetRefs": [{"name": "chat"}]},
}


def test_schema_defaults(control_plane: ControlPlane, crds_installed, namespace: str):
    """The defaults the operator's compiler relies on are filled in by the API server."""
    got = {}
    for kind, spec in MINIMAL.items():
        doc = {"apiVersion": "tollway.dev/v1alpha1", "kind": kind, "metadata": {"name": "defaults"}, "spec": spec}
        proc = _dry_run(control_plane, doc, namespace)
        assert proc.returncode == 0, proc.stderr
        got[kind] = json.loads(proc.stdout)["spec"]

    pool = got["ProviderKeyPool"]
    assert pool["selection"] == "round-robin"
    assert pool["cooldown"] == {"default": "30s", "max": "10m"}
    route = got["AIRoute"]
    assert route["match"] == {"pathPrefix": "/v1"}
    assert route["rules"][0]["backends"][0]["weight"] == 1
    assert route["rules"][0]["retry"] == {"attempts": 2}
    consumer = got["Consumer"]
    assert consumer["credentials"][0] == {"secretRef": {"name": "c", "key": "apiKey"}, "generate": False}
    trl = got["TokenRateLimit"]
    assert trl["key"] == "consumer"
    assert trl["failurePolicy"] == "open"
    assert trl["message"] == "Rate limit exceeded, please try again later."
    assert trl["estimate"] == {"defaultMaxTokens": 1024}
    assert trl["limits"][0]["count"] == "total"
    assert trl["targetRefs"] == [{"kind": "AIRoute", "name": "chat"}]


def test_status_subresource_and_printer_columns(control_plane: ControlPlane, crds_installed, namespace: str):
    """Status fields written by the operator survive pruning and feed the printer columns."""
    cp = control_plane
    cp.apply(
        yaml.safe_dump(
            {
                "apiVersion": "tollway.dev/v1alpha1",
                "kind": "AIRoute",
                "metadata": {"name": "chat"},
                "spec": MINIMAL["AIRoute"],
            }
        ),
        namespace=namespace,
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "observedGeneration": 1,
        "configHash": "sha256:0123abcd",
        "models": ["gpt-4o"],
        "modelsSummary": "gpt-4o",
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "ok",
                "observedGeneration": 1,
                "lastTransitionTime": now,
            },
            {
                "type": "Programmed",
                "status": "False",
                "reason": "PoolNotFound",
                "message": "ProviderKeyPool openai not found",
                "observedGeneration": 1,
                "lastTransitionTime": now,
            },
        ],
    }
    cp.kubectl(
        "patch",
        "airoute",
        "chat",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    stored = json.loads(cp.kubectl("get", "air", "chat", "-n", namespace, "-o", "json").stdout)
    assert stored["status"] == status
    table = cp.kubectl("get", "air", "chat", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODELS", "ACCEPTED", "PROGRAMMED", "AGE"], table
    assert table[1].split()[:4] == ["chat", "gpt-4o", "True", "False"], table

    # Spec changes through the main resource do not touch status, and vice versa.
    bad = cp.kubectl(
        "patch",
        "airoute",
        "chat",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"conditions": [{"type": "Accepted", "status": "Yes"}]}}),
        check=False,
    )
    assert bad.returncode != 0 and 'Unsupported value: "Yes"' in bad.stderr, bad.stderr


# --------------------------------------------------------------------------- RBAC


def test_rbac_is_enforced_for_service_accounts(control_plane: ControlPlane, namespace: str):
    cp = control_plane
    kubeconfig = cp.service_account_kubeconfig(namespace, "reader")
    who = cp.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig)
    assert who.stdout == f"system:serviceaccount:{namespace}:reader"

    denied = cp.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr and 'cannot list resource "secrets"' in denied.stderr, denied.stderr

    cp.kubectl("create", "role", "secret-reader", "-n", namespace, "--verb=get,list", "--resource=secrets")
    cp.kubectl(
        "create",
        "rolebinding",
        "reader-secrets",
        "-n",
        namespace,
        "--role=secret-reader",
        f"--serviceaccount={namespace}:reader",
    )
    deadline = time.monotonic() + 15
    while True:
        allowed = cp.kubectl("get", "secrets", "-n", namespace, kubeconfig=kubeconfig, check=False)
        if allowed.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert allowed.returncode == 0, allowed.stderr
    # The grant is namespaced: other namespaces and other verbs stay forbidden.
    other = cp.kubectl("get", "secrets", "-n", "default", kubeconfig=kubeconfig, check=False)
    assert other.returncode != 0 and "forbidden" in other.stderr
    create = cp.kubectl(
        "create", "secret", "generic", "x", "-n", namespace, "--from-literal=a=b", kubeconfig=kubeconfig, check=False
    )
    assert create.returncode != 0 and "forbidden" in create.stderr


# --------------------------------------------------------------------------- helm


def _helm(bin_dir: Path, tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(tmp_path / "helm-home" / var.lower())
    proc = subprocess.run([str(bin_dir / "helm"), *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_helm_version(k8s_bin_dir: Path, tmp_path: Path):
    out = _helm(k8s_bin_dir, tmp_path, "version", "--short").stdout
    assert re.match(r"v3\.\d+\.\d+", out), out


def test_helm_scratch_chart_templates_for_the_built_apiserver(k8s_bin_dir: Path, tmp_path: Path):
    version = binary_version(k8s_bin_dir)
    _helm(k8s_bin_dir, tmp_path, "create", str(tmp_path / "scratch"))
    (tmp_path / "scratch" / "templates" / "kubeversion.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube-version\n"
        "data:\n  version: {{ .Capabilities.KubeVersion.Version | quote }}\n"
    )
    out = _helm(
        k8s_bin_dir, tmp_path, "template", "scratch", str(tmp_path / "scratch"), "--kube-version", version
    ).stdout
    docs = {d["kind"]: d for d in yaml.safe_load_all(out) if d}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap"} <= set(docs), sorted(docs)
    assert docs["ConfigMap"]["data"]["version"] == version

    # Without --kube-version helm falls back to the version stamped at build time.
    out = _helm(k8s_bin_dir, tmp_path, "template", "scratch", str(tmp_path / "scratch")).stdout
    default = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap")["data"]["version"]
    major_minor = ".".join(version.split(".")[:2])
    assert default.startswith(major_minor + "."), f"helm defaults to {default}, apiserver is {version}"


@pytest.fixture
def chart_dir() -> Path:
    if not (CHART_DIR / "Chart.yaml").is_file():
        pytest.skip(f"NOT CHECKED: no Helm chart at {_rel(CHART_DIR)}/Chart.yaml yet")
    return CHART_DIR


def test_helm_chart_lints(k8s_bin_dir: Path, tmp_path: Path, chart_dir: Path):
    _helm(k8s_bin_dir, tmp_path, "lint", str(chart_dir))


def test_helm_chart_templates_and_passes_server_dry_run(
    control_plane: ControlPlane, crds_installed, namespace: str, tmp_path: Path, chart_dir: Path
):
    out = _helm(
        control_plane.bin_dir,
        tmp_path,
        "template",
        "tollway",
        str(chart_dir),
        "--namespace",
        namespace,
        "--kube-version",
        control_plane.version,
    ).stdout
    assert out.strip(), "the chart renders nothing"
    proc = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=out, check=False)
    assert proc.returncode == 0, proc.stderr
