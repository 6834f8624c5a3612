"""An operator, a data plane and a mock LLM as real processes against the e2e control plane.

The operator and the data plane each run as their own ServiceAccount with the RBAC from
helm/tollway/files/rbac/, so a missing permission fails the test (the logs are checked for 403/Forbidden too).
The helpers talk to the API server directly (keep-alive HTTPS as admin) where kubectl's start-up time would
blur a measurement, and through kubectl where readability matters more.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import yaml
from controlplane import ControlPlane
from controlplane.cluster import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
RBAC_DIR = REPO_ROOT / "helm" / "tollway" / "files" / "rbac"
CONFIGMAP = "tollway-config"
SECRET = "tollway-provider-keys"
# A status code standing alone: a hash or request id that holds the digits 403 ("594d403ec0") is not one.
FORBIDDEN = re.compile(r"(?<![\w.])403(?![\w.])|forbidden", re.IGNORECASE)
T = TypeVar("T")


def python() -> str:
    venv = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def wait_for(check: Callable[[], T], what: str, timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` (and the last error) after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except (OSError, AssertionError, KeyError, ValueError, http.client.HTTPException) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


class KubeAPI:
    """Admin access to the API server over keep-alive HTTPS connections (one per thread)."""

    def __init__(self, cp: ControlPlane):
        assert cp.workdir is not None
        pki = cp.workdir / "pki"
        self.context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = urlparse(cp.server)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 443
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=30)
            self._local.conn = conn
        return conn

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                return response.status, (json.loads(raw) if raw else {})
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        status, answer = self.request(method, path, body, content_type)
        assert status < 300, f"{method} {path}: {status} {answer.get('message', answer)}"
        return answer

    def get(self, path: str) -> dict[str, Any] | None:
        status, answer = self.request("GET", path)
        if status == 404:
            return None
        assert status < 300, f"GET {path}: {status} {answer}"
        return answer

    def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.ok("PATCH", path, body, "application/merge-patch+json")

    def create_many(self, items: Iterable[tuple[str, dict[str, Any]]], threads: int = 16) -> int:
        """POST every (collection path, object) in parallel."""
        items = list(items)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda item: self.ok("POST", item[0], item[1]), items))
        return len(items)


def cr_path(namespace: str, plural: str, name: str | None = None) -> str:
    base = f"/apis/tollway.dev/v1alpha1/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


def core_path(namespace: str, plural: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        env = dict(env or os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_lines(self) -> Iterator[dict[str, Any]]:
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


class Stack:
    """Mock LLM + operator + data plane for one namespace."""

    def __init__(self, cp: ControlPlane, namespace: str, workdir: Path):
        self.cp = cp
        self.namespace = namespace
        self.workdir = workdir
        self.api = KubeAPI(cp)
        self.operator_name = f"tollway-operator-{namespace[-6:]}"
        self.dataplane_name = "tollway-dataplane"
        self.mock: Proc | None = None
        self.operator: Proc | None = None
        self.dataplane: Proc | None = None
        self.mock_url = ""
        self.dataplane_url = ""
        self._tolerated: list[tuple[float, float]] = []

    # -- processes ------------------------------------------------------------------------------------------------
    def start_mock(self) -> None:
        port = free_port()
        self.mock = Proc(
            "mock", [python(), "-m", "tollway_cli", "mock", "--port", str(port)], self.workdir / "mock.log"
        )
        self.mock_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _http_json(f"{self.mock_url}/healthz")[0] == 200, "the mock LLM")

    def install_rbac(self) -> None:
        ns = self.namespace
        operator = _substitute(
            (RBAC_DIR / "operator.yaml").read_text(),
            NAME=self.operator_name,
            OPERATOR_NAMESPACE=ns,
            WATCH_NAMESPACE=ns,
            TARGET_NAMESPACE=ns,
            CONFIGMAP=CONFIGMAP,
            SECRET=SECRET,
        )
        dataplane = _substitute(
            (RBAC_DIR / "dataplane.yaml").read_text(),
            NAME=self.dataplane_name,
            NAMESPACE=ns,
            CONFIGMAP=CONFIGMAP,
            SECRET=SECRET,
        )
        self.cp.kubectl("apply", "-f", "-", input=operator)
        self.cp.kubectl("apply", "-f", "-", input=dataplane)

    def start_operator(self, *extra: str, timeout: float = 30) -> Proc:
        kubeconfig = self.cp.service_account_kubeconfig(self.namespace, self.operator_name, create=False)
        self.operator = Proc(
            "operator",
            [python(), "-m", "tollway_cli", "operator", "--namespace", self.namespace, *extra],
            self.workdir / "operator.log",
            env=self.cp.env(kubeconfig),
        )
        wait_for(self.rendered_hash, "the operator's first render", timeout=timeout)
        return self.operator

    def start_dataplane(self) -> Proc:
        kubeconfig = self.cp.service_account_kubeconfig(self.namespace, self.dataplane_name, create=False)
        port = free_port()
        self.dataplane = Proc(
            "dataplane",
            [
                python(),
                "-m",
                "tollway_cli",
                "run",
                "--kube-configmap",
                f"{self.namespace}/{CONFIGMAP}",
                "--kubeconfig",
                str(kubeconfig),
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--drain-delay",
                "0",
                "--grace-period",
                "5",
                "--no-access-log",
            ],
            self.workdir / "dataplane.log",
        )
        self.dataplane_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: self.readyz().get("ready"), "the data plane to be ready", timeout=30)
        return self.dataplane

    def stop(self) -> None:
        for proc in (self.dataplane, self.operator, self.mock):
            if proc is not None:
                proc.stop()

    def forbidden(self) -> list[str]:
        """Log lines of the operator and the data plane that mention 403/Forbidden: a missing RBAC permission.
        Lines from an API server restart window (see `tolerate_forbidden`) do not count: a freshly started API
        server refuses requests until its RBAC cache is filled."""
        lines = []
        for proc in (self.operator, self.dataplane):
            if proc is None:
                continue
            for line in proc.log().splitlines():
                if not FORBIDDEN.search(line):
                    continue
                try:
                    stamp = float(json.loads(line).get("time", 0))
                except (ValueError, AttributeError):
                    stamp = 0.0
                if any(start <= stamp <= end for start, end in self._tolerated):
                    continue
                lines.append(f"{proc.name}: {line[:400]}")
        return lines

    def tolerate_forbidden(self, start: float, end: float) -> None:
        self._tolerated.append((start, end))

    def operator_renders(self) -> list[dict[str, Any]]:
        assert self.operator is not None
        return [line for line in self.operator.log_lines() if line.get("msg") in ("config written", "config unchanged")]

    def operator_status_syncs(self) -> list[dict[str, Any]]:
        assert self.operator is not None
        return [line for line in self.operator.log_lines() if line.get("msg") == "statuses synced"]

    # -- the cluster ----------------------------------------------------------------------------------------------
    def apply(self, manifest: str) -> None:
        self.cp.apply(manifest, namespace=self.namespace)

    def get_cr(self, plural: str, name: str) -> dict[str, Any] | None:
        return self.api.get(cr_path(self.namespace, plural, name))

    def rendered_hash(self) -> str | None:
        """The hash the rendered ConfigMap and Secret both carry (None while they differ or are missing)."""
        annotation = "tollway.dev/config-hash"
        cm = self.api.get(core_path(self.namespace, "configmaps", CONFIGMAP))
        secret = self.api.get(core_path(self.namespace, "secrets", SECRET))
        if not cm or not secret:
            return None
        digest = cm["metadata"]["annotations"].get(annotation)
        return digest if digest == secret["metadata"]["annotations"].get(annotation) else None

    def rendered_documents(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The config and provider-keys documents as the data plane reads them (shards assembled)."""
        from tollway_contract.rendered import MANIFEST_KEY, SHARD_KEY, Manifest, decode_document, object_blobs

        out = []
        for plural, kind, name in (("configmaps", "ConfigMap", CONFIGMAP), ("secrets", "Secret", SECRET)):
            main = self.api.get(core_path(self.namespace, plural, name))
            assert main is not None, f"{kind} {name} is missing"
            blobs = object_blobs({**main, "kind": kind})
            manifest = Manifest.from_json(blobs[MANIFEST_KEY])
            pieces = None
            if manifest.shards:
                pieces = []
                for shard_name in manifest.shards:
                    shard = self.api.get(core_path(self.namespace, plural, shard_name))
                    assert shard is not None, f"shard {shard_name} is missing"
                    pieces.append(object_blobs({**shard, "kind": kind})[SHARD_KEY])
            out.append(json.loads(decode_document(manifest, blobs, pieces)))
        return out[0], out[1]

    def cluster_documents(self) -> list[dict[str, Any]]:
        """Every Tollway object and Secret of the namespace, as the API returns them (for compiling locally)."""
        docs = []
        for plural, kind in (
            ("airoutes", "AIRoute"),
            ("consumers", "Consumer"),
            ("providerkeypools", "ProviderKeyPool"),
            ("tokenratelimits", "TokenRateLimit"),
        ):
            for item in self.api.ok("GET", cr_path(self.namespace, plural))["items"]:
                docs.append({**item, "apiVersion": "tollway.dev/v1alpha1", "kind": kind})
        for item in self.api.ok("GET", core_path(self.namespace, "secrets"))["items"]:
            if (item["metadata"].get("labels") or {}).get("tollway.dev/rendered") != "true":
                docs.append({**item, "apiVersion": "v1", "kind": "Secret"})
        return docs

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.api.ok("GET", core_path(self.namespace, "events"))["items"]
        return [e for e in items if e["involvedObject"].get("name") == name]

    # -- the data plane -------------------------------------------------------------------------------------------
    def readyz(self) -> dict[str, Any]:
        return _http_json(f"{self.dataplane_url}/readyz")[1]

    def chat(self, model: str, key: str | None, **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], **extra}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return _http_json(f"{self.dataplane_url}/v1/chat/completions", body, headers)

    def models(self, key: str) -> list[str]:
        status, body = _http_json(f"{self.dataplane_url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        return [m["id"] for m in body.get("data", [])] if status == 200 else []

    # -- the mock -------------------------------------------------------------------------------------------------
    def mock_requests(self) -> list[dict[str, Any]]:
        return _http_json(f"{self.mock_url}/__mock/requests")[1]  # type: ignore[return-value]

    def mock_clear(self) -> None:
        _http_json(f"{self.mock_url}/__mock/requests", method="DELETE")

    def mock_script(self, behaviour: dict[str, Any], times: int = 1) -> None:
        status, body = _http_json(
            f"{self.mock_url}/__mock/script", {"match": {}, "times": times, "behaviour": behaviour}
        )
        assert status == 201, body


def _substitute(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace(f"__{key}__", value)
    leftover = re.findall(r"__[A-Z_]+__", text)
    assert not leftover, f"unsubstituted placeholders: {sorted(set(leftover))}"
    return text


def _http_json(
    url: str, body: Any = None, headers: dict[str, str] | None = None, method: str | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    if method:
        request.method = method
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else {})
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}


def yaml_docs(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)
