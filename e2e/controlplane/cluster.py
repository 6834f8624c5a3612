"""A throw-away Kubernetes control plane (etcd + kube-apiserver) for the e2e tier.

There is no scheduler, kubelet or controller-manager: objects are stored and
validated (schemas, CEL, RBAC, admission) but nothing reconciles them. In
particular namespaces never finish deleting, owner-reference garbage collection
does not happen and Deployments never become ready.

The binaries come from ``e2e/controlplane/build.sh`` (``make controlplane``);
``TOLLWAY_K8S_BIN`` points at another directory holding
kube-apiserver, etcd, kubectl and helm.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build.sh"
REQUIRED_BINARIES = ("kube-apiserver", "etcd", "kubectl", "helm")
BUILD_HINT = "build them with `make controlplane` (or e2e/controlplane/build.sh; ~6 min once, cached)"


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or a command against it failed."""


# --------------------------------------------------------------------------- binaries


def bin_dir() -> Path:
    """Where the control-plane binaries are expected (built or not)."""
    override = os.environ.get("TOLLWAY_K8S_BIN")
    if override:
        return Path(override).expanduser()
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-bin-dir"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def missing_binaries(directory: Path) -> list[str]:
    return [b for b in REQUIRED_BINARIES if not os.access(directory / b, os.X_OK)]


def binary_version(directory: Path) -> str:
    """The gitVersion the kube-apiserver binary reports, e.g. v1.36.3."""
    out = subprocess.run([str(directory / "kube-apiserver"), "--version"], check=True, capture_output=True, text=True)
    match = re.search(r"v\d+\.\d+\.\d+\S*", out.stdout)
    if not match:
        raise ControlPlaneError(f"cannot parse kube-apiserver --version output: {out.stdout!r}")
    return match.group(0)


# --------------------------------------------------------------------------- certificates


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _issue(
    subject: x509.Name,
    key,
    issuer: x509.Name,
    issuer_key,
    *,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class _Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def _make_pki(directory: Path) -> _Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("tollway-e2e-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    ]
    serving = _issue(_name("kube-apiserver"), serving_key, ca_name, ca_key, server=True, sans=sans)

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(_name("admin", "system:masters"), admin_key, ca_name, ca_key, client=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    files = {
        "ca.crt": _pem_cert(ca),
        "apiserver.crt": _pem_cert(serving),
        "apiserver.key": _pem_key(serving_key),
        "admin.crt": _pem_cert(admin),
        "admin.key": _pem_key(admin_key),
        "sa.key": _pem_key(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    for fname, data in files.items():
        (directory / fname).write_bytes(data)
        os.chmod(directory / fname, 0o600)
    return _Pki(
        ca_cert=directory / "ca.crt",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    *,
    user: str,
    token: str | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    namespace: str | None = None,
) -> Path:
    """Write a single-context kubeconfig with the CA and credentials embedded."""
    creds: dict[str, str] = {}
    if token:
        creds["token"] = token
    if client_cert and client_key:
        creds["client-certificate-data"] = _b64(client_cert)
        creds["client-key-data"] = _b64(client_key)
    context: dict[str, str] = {"cluster": "tollway-e2e", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "tollway-e2e", "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class _Process:
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self, env: Mapping[str, str] | None = None) -> None:
        with open(self.log_path, "wb") as log:
            # Own session: Ctrl-C in the test runner must not kill it before teardown does.
            self.popen = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env or os.environ),
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


@dataclass
class ControlPlane:
    """etcd + kube-apiserver on free 127.0.0.1 ports, RBAC on, admin via a client certificate."""

    bin_dir: Path
    workdir: Path | None = None
    startup_timeout: float = float(os.environ.get("TOLLWAY_E2E_STARTUP_TIMEOUT", "90"))

    server: str = ""
    kubeconfig: Path = field(default=Path())
    ca_cert: Path = field(default=Path())
    version: str = ""
    startup_seconds: float = 0.0
    _procs: list[_Process] = field(default_factory=list)
    _own_workdir: bool = False

    # -- paths ---------------------------------------------------------------
    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm_path(self) -> Path:
        return self.bin_dir / "helm"

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> ControlPlane:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="tollway-e2e-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.version = binary_version(self.bin_dir)
        started = time.monotonic()
        pki = _make_pki(self.workdir / "pki")
        self.ca_cert = pki.ca_cert

        etcd_client, etcd_peer, api_port = free_port(), free_port(), free_port()
        etcd = _Process(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=e2e=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.workdir / "etcd.log",
        )
        self._procs.append(etcd)
        etcd.start()
        self._await(etcd, lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), "etcd /health")

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = _Process(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            self.workdir / "kube-apiserver.log",
        )
        self._procs.append(apiserver)
        apiserver.start()
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._await(apiserver, lambda: _http_ok(f"{self.server}/readyz", ctx), "kube-apiserver /readyz")

        self.kubeconfig = write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            self.server,
            pki.ca_cert,
            user="admin",
            client_cert=pki.admin_cert,
            client_key=pki.admin_key,
        )
        self.startup_seconds = time.monotonic() - started
        return self

    def _await(self, proc: _Process, probe, what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                code = proc.popen.returncode if proc.popen else None
                raise self._startup_failure(f"{proc.name} exited with {code} before {what}")
            if probe():
                return
            time.sleep(0.2)
        raise self._startup_failure(f"{what} not ready within {self.startup_timeout:.0f}s")

    def _startup_failure(self, why: str) -> ControlPlaneError:
        logs = "\n".join(f"----- {p.name} log ({p.log_path}) -----\n{p.log_tail()}" for p in self._procs)
        self.stop(keep_workdir=True)
        return ControlPlaneError(f"{why}\n{logs}")

    def stop(self, keep_workdir: bool = False) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._own_workdir and self.workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(keep_workdir=bool(os.environ.get("TOLLWAY_E2E_KEEP")))

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} -----\n{p.log_tail()}" for p in self._procs)

    def restart_apiserver(self, downtime: float = 0.0) -> float:
        """Stop kube-apiserver and start it again with the same flags: same certificates, port and etcd, so
        clients (and their service-account tokens) keep working. Returns the seconds until /readyz answers."""
        assert self.workdir is not None
        old = next(p for p in self._procs if p.name == "kube-apiserver")
        started = time.monotonic()
        old.stop(timeout=2)  # with watches open it would drain for longer; a crash is the harder case anyway
        time.sleep(downtime)
        restarts = sum(1 for p in self.workdir.glob("kube-apiserver*.log"))
        new = _Process("kube-apiserver", old.argv, self.workdir / f"kube-apiserver.{restarts}.log")
        self._procs[self._procs.index(old)] = new
        new.start()
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._await(new, lambda: _http_ok(f"{self.server}/readyz", ctx), "kube-apiserver /readyz after a restart")
        return time.monotonic() - started

    # -- commands ------------------------------------------------------------
    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """Environment for kubectl/helm/operator processes talking to this control plane."""
        assert self.workdir is not None
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(kubeconfig or self.kubeconfig),
            KUBECACHEDIR=str(self.workdir / "kube-cache"),
            HELM_CACHE_HOME=str(self.workdir / "helm" / "cache"),
            HELM_CONFIG_HOME=str(self.workdir / "helm" / "config"),
            HELM_DATA_HOME=str(self.workdir / "helm" / "data"),
        )
        return env

    def _run(
        self,
        argv: list[str],
        *,
        input: str | None,
        check: bool,
        kubeconfig: Path | None,
        timeout: float,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"`{' '.join(argv)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess:
        """Run kubectl (as admin unless another kubeconfig is given)."""
        return self._run(
            [str(self.kubectl_path), *args], input=input, check=check, kubeconfig=kubeconfig, timeout=timeout
        )

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        return self._run([str(self.helm_path), *args], input=input, check=check, kubeconfig=kubeconfig, timeout=timeout)

    def apply(self, manifest: str, *, namespace: str | None = None, **kw) -> subprocess.CompletedProcess:
        """Server-side apply a YAML manifest given as text."""
        args = ["apply", "--server-side", "--field-manager=tollway-e2e", "-f", "-"]
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=manifest, **kw)

    # -- identities ----------------------------------------------------------
    def service_account_token(self, namespace: str, name: str, *, create: bool = True, duration: str = "1h") -> str:
        """Mint a token for a ServiceAccount through the TokenRequest API."""
        if create:
            self.apply(
                yaml.safe_dump(
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
                )
            )
        out = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")
        return out.stdout.strip()

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, create: bool = True, duration: str = "1h"
    ) -> Path:
        """A kubeconfig that authenticates as system:serviceaccount:<namespace>:<name>."""
        assert self.workdir is not None
        token = self.service_account_token(namespace, name, create=create, duration=duration)
        path = self.workdir / "kubeconfigs" / f"{namespace}.{name}.kubeconfig"
        path.parent.mkdir(exist_ok=True)
        return write_kubeconfig(
            path,
            self.server,
            self.ca_cert,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
        )


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
