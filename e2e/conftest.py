"""Fixtures for the e2e tier: a real kube-apiserver + etcd, started once per session.

Run with ``pytest e2e``. The tier is only collected when pytest is pointed at
e2e/ (or a file in it); a bare ``pytest`` from the repository root ignores it.

Binaries: ``make controlplane`` builds them into ~/.cache/tollway (see
e2e/controlplane/build.sh); ``TOLLWAY_K8S_BIN`` overrides the directory. When
they are missing the tier is skipped with a banner, or fails when ``CI=true``.

Fixtures:
  control_plane  session: ControlPlane (server, kubeconfig, bin_dir, kubectl(), helm(),
                 service_account_kubeconfig(), ...)
  namespace      function: a fresh namespace name (deleted without waiting afterwards)
  crds_installed session: every crds/*.yaml applied and Established
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path

import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))

from controlplane import BUILD_HINT, ControlPlane, bin_dir, missing_binaries  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"


def _e2e_requested(config: pytest.Config) -> bool:
    """True when one of pytest's path arguments is e2e/ or something inside it."""
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == E2E_DIR or E2E_DIR in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    if not _e2e_requested(config):
        return True
    return None


def _binaries_status() -> tuple[Path, list[str]]:
    directory = bin_dir()
    return directory, missing_binaries(directory)


_BIN_DIR, _MISSING = _binaries_status()
_MISSING_REASON = (
    f"e2e tier needs {', '.join(_MISSING)} in {_BIN_DIR}: {BUILD_HINT}; "
    "or set TOLLWAY_K8S_BIN to a directory holding kube-apiserver, etcd, kubectl and helm"
)


def pytest_configure(config: pytest.Config) -> None:
    # Always list skip reasons: a skipped e2e check must never look like a pass.
    chars = getattr(config.option, "reportchars", "") or ""
    if "s" not in chars and "a" not in chars and "A" not in chars:
        config.option.reportchars = chars + "s"


def pytest_report_header(config: pytest.Config):
    if _MISSING:
        return [f"tollway e2e: control-plane binaries MISSING ({_BIN_DIR})"]
    return [f"tollway e2e: control-plane binaries {_BIN_DIR}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _MISSING and _e2e_requested(config):
        verb = "FAILED (CI=true)" if IN_CI else "SKIPPED"
        terminalreporter.section(f"e2e tier {verb}", sep="!", yellow=True, bold=True)
        terminalreporter.write_line(_MISSING_REASON, yellow=True, bold=True)


@pytest.fixture(scope="session")
def k8s_bin_dir() -> Path:
    """Directory with kube-apiserver, etcd, kubectl and helm."""
    if _MISSING and IN_CI:
        pytest.fail(f"CI=true and the control plane is missing: {_MISSING_REASON}", pytrace=False)
    if _MISSING:
        pytest.skip(_MISSING_REASON)
    return _BIN_DIR


@pytest.fixture(scope="session")
def control_plane(k8s_bin_dir: Path):
    cp = ControlPlane(bin_dir=k8s_bin_dir)
    cp.start()
    sys.stderr.write(f"\n[e2e] kube-apiserver {cp.version} ready at {cp.server} in {cp.startup_seconds:.1f}s\n")
    try:
        yield cp
    finally:
        cp.stop(keep_workdir=bool(os.environ.get("TOLLWAY_E2E_KEEP")))


def _dns_label(text: str, limit: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:limit].rstrip("-") or "t"


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest):
    """A fresh namespace per test. Without controllers it never finishes deleting; the delete is just issued."""
    name = f"e2e-{_dns_label(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


CRD_DIR = REPO_ROOT / "crds"


@pytest.fixture(scope="session")
def crds_installed(control_plane: ControlPlane) -> list[str]:
    """Apply every crds/*.yaml and wait until each CRD is Established; returns the CRD names."""
    files = sorted(CRD_DIR.glob("*.yaml"))
    if not files:
        pytest.skip(f"no CRDs in {CRD_DIR}")
    names: list[str] = []
    for f in files:
        out = control_plane.kubectl("apply", "--server-side", "--field-manager=tollway-e2e", "-f", str(f), "-o", "name")
        names += [line.strip() for line in out.stdout.splitlines() if line.strip()]
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names
