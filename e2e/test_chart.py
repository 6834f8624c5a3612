"""The Helm chart against a real API server: value sets render and pass a server-side dry run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from controlplane.cluster import ControlPlane

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "tollway"

VALUE_SETS = {
    "defaults": [],
    "external-redis": [
        "--set",
        "redis.mode=external",
        "--set",
        "redis.external.url=redis://redis.example:6379/0",
        "--set",
        "redis.external.passwordSecret.name=redis-auth",
    ],
    "external-redis-cluster": [
        "--set",
        "redis.mode=external",
        "--set",
        "redis.external.topology=cluster",
        "--set",
        "redis.external.url=rediss://tollway@redis-cluster.example:6379",
        "--set",
        "redis.external.tls.caSecret.name=redis-ca",
    ],
    "external-redis-sentinel": [
        "--set",
        "redis.mode=external",
        "--set",
        "redis.external.topology=sentinel",
        "--set",
        "redis.external.sentinel.hosts={{sentinel-0.redis:26379,sentinel-1.redis:26379,sentinel-2.redis:26379}}",  # format()-escaped
        "--set",
        "redis.external.sentinel.masterName=mymaster",
        "--set",
        "redis.external.username=tollway",
        "--set",
        "redis.external.passwordSecret.name=redis-auth",
        "--set",
        "redis.external.url=rediss://sentinel/0",
        "--set",
        "redis.external.tls.clientCertSecret=redis-client-tls",
    ],
    "builtin-redis-networkpolicy": ["--set", "redis.mode=builtin", "--set", "networkPolicy.enabled=true"],
    "no-redis-hpa-off": [
        "--set",
        "redis.mode=none",
        "--set",
        "dataplane.hpa.enabled=false",
        "--set",
        "dataplane.replicas=3",
    ],
    # {ns} is the test's namespace; {ns}-b a second one the test creates.
    "several-namespaces-peering-mock": [
        "--set",
        "watchNamespaces={{{ns},{ns}-b}}",
        "--set",
        "operator.replicas=2",
        "--set",
        "operator.peering=true",
        "--set",
        "mock.enabled=true",
        "--set",
        "dataplane.logPrompts=true",
        "--set",
        "dataplane.logTextLimit=500",
        "--set",
        "dataplane.accessLog=false",
        "--set",
        "dataplane.cacheMaxBytes=64Mi",
        "--set",
        "dataplane.responsesTtl=2h",
    ],
}


CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace")


def render(control_plane: ControlPlane, namespace: str, *args: str) -> list[dict]:
    out = control_plane.helm(
        "template", "tollway", str(CHART), "--namespace", namespace, "--kube-version", control_plane.version, *args
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_value_sets_pass_server_dry_run(control_plane: ControlPlane, crds_installed, namespace: str, name: str):
    args = [a.format(ns=namespace) for a in VALUE_SETS[name]]
    if any(f"{namespace}-b" in a for a in args):
        control_plane.kubectl("create", "namespace", f"{namespace}-b")
    documents = render(control_plane, namespace, *args)
    for document in documents:  # helm leaves the release namespace implicit; RBAC for watched ones is explicit
        if document["kind"] not in CLUSTER_SCOPED:
            document["metadata"].setdefault("namespace", namespace)
    manifest = yaml.safe_dump_all(documents)
    proc = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert proc.returncode == 0, proc.stderr
    kinds = {d["kind"] for d in documents}
    crds = {d["metadata"]["name"] for d in documents if d["kind"] == "CustomResourceDefinition"}
    # kopf's peering CRDs come with operator.peering, and only then.
    assert ("kopfpeerings.kopf.dev" in crds) == ("peering" in name), crds
    if name == "builtin-redis-networkpolicy":
        assert {"StatefulSet", "NetworkPolicy"} <= kinds
    dataplane_args = next(
        d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in documents
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-dataplane")
    )
    if name == "external-redis-cluster":
        assert "--redis-cluster" in dataplane_args and "--redis-ca-file=/etc/tollway/redis-ca/ca.crt" in dataplane_args
    if name == "external-redis-sentinel":
        assert "--redis-sentinel-master=mymaster" in dataplane_args
        assert "--redis-client-key=/etc/tollway/redis-client/tls.key" in dataplane_args
    if name == "no-redis-hpa-off":
        assert "HorizontalPodAutoscaler" not in kinds and "StatefulSet" not in kinds


@pytest.mark.parametrize(
    "values",
    [
        ["redis.mode=external", "redis.external.topology=sentinel"],  # no sentinels, no master name
        ["redis.mode=external", "redis.external.topology=cluster", "redis.external.url=redis://c:6379/3"],  # db 0 only
        ["redis.mode=external", "redis.external.topology=ring", "redis.external.url=redis://r:6379/0"],
    ],
)
def test_redis_topology_values_are_validated(control_plane: ControlPlane, namespace: str, values: list[str]):
    args = [a for value in values for a in ("--set", value)]
    proc = control_plane.helm("template", "t", str(CHART), "--namespace", namespace, *args, check=False)
    assert proc.returncode != 0 and "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_pods_follow_security_conventions(control_plane: ControlPlane, namespace: str):
    for document in render(control_plane, namespace, "--set", "mock.enabled=true"):
        if document["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = document["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, document["metadata"]["name"]
        for container in pod["containers"]:
            context = container["securityContext"]
            where = f"{document['metadata']['name']}/{container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert container["resources"]["requests"] and container["resources"]["limits"], where
            assert container.get("livenessProbe"), where
            assert container.get("readinessProbe"), where


def test_dataplane_drains_before_it_is_killed(control_plane: ControlPlane, namespace: str):
    deployment = next(
        d
        for d in render(control_plane, namespace)
        if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-dataplane")
    )
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    drain = float(next(a for a in args if a.startswith("--drain-delay=")).split("=")[1])
    grace = float(next(a for a in args if a.startswith("--grace-period=")).split("=")[1])
    assert pod["terminationGracePeriodSeconds"] > drain + grace


QUICKSTART_UPSTREAM = "http://127.0.0.1:9090"  # where examples/quickstart expects `make run`'s mock


def with_free_ports(args: list[str]) -> list[str]:
    """The operator's args with its health endpoints moved to free ports (processes share one machine)."""
    from controlplane.cluster import free_port

    moved = []
    for arg in args:
        for flag in ("--liveness", "--readiness"):
            if arg.startswith(flag + "="):
                path = "/" + arg.split("/", 3)[3]
                arg = f"{flag}=http://127.0.0.1:{free_port()}{path}"
        moved.append(arg)
    return moved


def install(control_plane: ControlPlane, namespace: str, release: str, *values: str) -> list[str]:
    """`helm install` the chart; the operator's args (after the subcommand) from the installed Deployment."""
    control_plane.helm("install", release, str(CHART), "--namespace", namespace, "--set", "redis.mode=none", *values)
    for crd in ("airoutes", "consumers", "providerkeypools", "tokenratelimits"):
        established = control_plane.kubectl(
            "get", f"crd/{crd}.tollway.dev", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"
        ).stdout
        assert established == "True", crd
    manifest = control_plane.helm("get", "manifest", release, "--namespace", namespace).stdout
    deployments = {d["metadata"]["name"]: d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment"}
    args = deployments[f"{release}-tollway-operator"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    return list(args[1:])


def endpoint(args: list[str], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))


def readiness(url: str) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_helm_install_then_the_chart_rbac_reconciles_the_examples(
    control_plane: ControlPlane, crds_installed, namespace: str, tmp_path: Path
):
    """`helm install` succeeds and serves the CRDs; the operator and the data plane, run with the chart's own
    ServiceAccounts, args and RBAC, reconcile every example: a missing permission fails this test. The operator
    turns ready once it has published, and the quickstart answers through a mock on a free port (nothing here
    depends on a fixed port being free)."""
    from gateway_stack import Stack, wait_for

    release = "tlw"
    operator_args = with_free_ports(install(control_plane, namespace, release))
    stack = Stack(control_plane, namespace, tmp_path)
    stack.operator_name = f"{release}-tollway-operator"  # the chart's ServiceAccounts, bound by the chart's RBAC
    stack.dataplane_name = f"{release}-tollway-dataplane"
    try:
        stack.start_mock()
        for example in sorted((ROOT / "examples").glob("*/*.yaml")):
            stack.apply(example.read_text().replace(QUICKSTART_UPSTREAM, stack.mock_url))
        stack.start_operator(*operator_args, timeout=60)
        wait_for(lambda: readiness(endpoint(operator_args, "--readiness"))[0] == 200, "the operator to be ready")

        def all_programmed() -> bool:
            for plural in ("airoutes", "consumers", "providerkeypools", "tokenratelimits"):
                items = stack.api.ok("GET", f"/apis/tollway.dev/v1alpha1/namespaces/{namespace}/{plural}")["items"]
                for item in items:
                    conditions = {c["type"]: c["status"] for c in item.get("status", {}).get("conditions", [])}
                    if conditions.get("Accepted") != "True" or conditions.get("Programmed") != "True":
                        return False
            return True

        wait_for(all_programmed, "every example to be Accepted and Programmed", timeout=60)
        stack.start_dataplane()
        assert stack.readyz()["configHash"] == stack.rendered_hash()
        status, body = stack.chat("mock-gpt", "sk-tollway-demo")
        assert status == 200, body
        assert stack.forbidden() == []
    finally:
        stack.stop()


def test_with_peering_a_standby_operator_takes_over(
    control_plane: ControlPlane, crds_installed, namespace: str, tmp_path: Path
):
    """operator.peering: the chart installs kopf's peering CRDs and the RBAC, the replicas create their peering
    object; the higher-priority replica renders, the other stands by (and is ready), and when the active one
    stops the standby takes over and renders the next change."""
    from gateway_stack import FORBIDDEN, Proc, Stack, python, wait_for

    release = "peer"
    args = install(control_plane, namespace, release, "--set", "operator.peering=true", "--set", "operator.replicas=2")
    assert f"--peering={release}-tollway" in args
    established = control_plane.kubectl(
        "get", "crd/kopfpeerings.kopf.dev", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    ).stdout
    assert established == "True"
    stack = Stack(control_plane, namespace, tmp_path)
    stack.operator_name = f"{release}-tollway-operator"
    standby: Proc | None = None

    def route(model: str) -> str:
        return f"""
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: extra, namespace: {namespace}}}
            spec:
              rules: [{{models: [{model}], backends: [{{pool: mock}}]}}]
        """

    def renders(proc: Proc) -> int:
        return sum(1 for line in proc.log_lines() if line.get("msg") == "config written")

    try:
        for example in sorted((ROOT / "examples" / "quickstart").glob("*.yaml")):
            stack.apply(example.read_text())
        active_args = with_free_ports(args)
        active = stack.start_operator(*active_args, "--priority=20", timeout=60)
        wait_for(lambda: readiness(endpoint(active_args, "--readiness"))[0] == 200, "the active operator to be ready")
        standby_args = with_free_ports(args)
        kubeconfig = control_plane.service_account_kubeconfig(namespace, stack.operator_name, create=False)
        standby = Proc(
            "standby",
            [python(), "-m", "tollway_cli", "operator", *standby_args, "--priority=10"],
            tmp_path / "standby.log",
            env=control_plane.env(kubeconfig),
        )
        standby_ready = wait_for(
            lambda: (answer := readiness(endpoint(standby_args, "--readiness")))[0] == 200 and answer[1],
            "the standby to be ready",
            timeout=60,
        )
        assert "standing by" in standby_ready["reason"]
        assert stack.api.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{release}-tollway")

        before = stack.rendered_hash()
        stack.apply(route("first-change"))
        first = wait_for(lambda: (h := stack.rendered_hash()) != before and h, "the active operator to render")
        assert renders(standby) == 0  # standing by: it never writes

        active.stop()  # SIGTERM: kopf leaves the peering, the standby resumes
        stack.apply(route("second-change"))
        wait_for(lambda: (h := stack.rendered_hash()) != first and h, "the standby to take over", timeout=90)
        assert renders(standby) >= 1
        assert stack.forbidden() == []
        assert not [line for line in standby.log().splitlines() if FORBIDDEN.search(line)]
    finally:
        if standby is not None:
            standby.stop()
        stack.stop()
