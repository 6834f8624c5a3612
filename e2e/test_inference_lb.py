"""Inference-aware balancing against a real API server: a ProviderKeyPool names a Service, the test creates that
Service's EndpointSlices (there is no kubelet or EndpointSlice controller here) pointing at mock model servers,
and the operator (with the chart's RBAC, now reading EndpointSlices) renders their ready addresses into the config
the data plane serves. The data plane's RBAC stays as it was: it only ever reads its ConfigMap and Secret.

The API server refuses loopback addresses in EndpointSlices (and FQDN slices need a dotted name, which
`localhost` is not), so the mocks listen on this machine's own non-loopback IPv4 address, the one a pod IP would
be; one slice per mock, each with its own port, the way a Service's slices can differ in port during a rollout.
Without such an address the test is skipped and says so.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from controlplane.cluster import free_port
from gateway_stack import Proc, Stack, _http_json, python, wait_for


@pytest.fixture
def stack(control_plane: ControlPlane, crds_installed, namespace: str, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(control_plane, namespace, tmp_path)
    try:
        s.start_mock()
        s.install_rbac()
        s.start_operator()
        s.start_dataplane()
        yield s
    finally:
        s.stop()
    forbidden = s.forbidden()
    assert not forbidden, "RBAC is missing a permission:\n" + "\n".join(forbidden)


def pod_address() -> str:
    """A non-loopback IPv4 address of this machine (the source address of its default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # a UDP connect sends nothing; it only picks the route
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    ip = ipaddress.ip_address(address)
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
        pytest.skip("NOT CHECKED: this machine has no non-loopback IPv4 address for the EndpointSlices to name")
    return address


class ModelServer:
    """One more mock LLM process, standing in for a vLLM pod at `host`."""

    def __init__(self, workdir: Path, name: str, host: str):
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        argv = [python(), "-m", "tollway_cli", "mock", "--host", host, "--port", str(self.port)]
        self.proc = Proc(name, argv, workdir / f"{name}.log")
        wait_for(lambda: _http_json(f"{self.url}/healthz")[0] == 200, f"model server {name}")

    def chats(self) -> int:
        return sum(1 for r in _http_json(f"{self.url}/__mock/requests")[1] if r["path"].endswith("/chat/completions"))


def endpoint_slice(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "vllm"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
    }


RESOURCES = """
apiVersion: v1
kind: Service
metadata: {name: vllm}
spec:
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: tollway.dev/v1alpha1
kind: ProviderKeyPool
metadata: {name: gpus}
spec:
  provider: openai-compatible
  endpoints:
    service: {name: vllm, port: http}
    picker: round-robin
    metrics: {format: vllm, interval: 200ms}
  timeouts: {connect: 2s, firstByte: 5s, idle: 5s}
---
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {name: chat}
spec:
  rules:
    - models: [mock-gpt]
      backends: [{pool: gpus}]
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {name: alice}
spec: {credentials: [{secretRef: {name: alice-key}}]}
---
apiVersion: v1
kind: Secret
metadata: {name: alice-key}
stringData: {apiKey: sk-alice}
"""


def rendered_urls(stack: Stack) -> list[str]:
    config, _ = stack.rendered_documents()
    pools = [p for p in config["pools"] if p["name"] == f"{stack.namespace}/gpus"]
    return list(pools[0]["endpoints"]["urls"]) if pools else []


def serving(stack: Stack, urls: list[str]) -> bool:
    """The operator rendered exactly `urls` and the data plane loaded that config."""
    return sorted(rendered_urls(stack)) == sorted(urls) and stack.readyz().get("configHash") == stack.rendered_hash()


def test_endpoint_slices_reach_the_data_plane_and_a_removed_endpoint_gets_no_traffic(stack: Stack) -> None:
    host = pod_address()
    one, two = ModelServer(stack.workdir, "vllm-0", host), ModelServer(stack.workdir, "vllm-1", host)
    try:
        stack.apply(RESOURCES)
        slices = f"/apis/discovery.k8s.io/v1/namespaces/{stack.namespace}/endpointslices"
        stack.api.ok("POST", slices, endpoint_slice("vllm-a", host, one.port))
        stack.api.ok("POST", slices, endpoint_slice("vllm-b", host, two.port))
        both = [f"http://{host}:{one.port}/v1", f"http://{host}:{two.port}/v1"]
        wait_for(lambda: serving(stack, both), "both endpoints in the data plane's config")
        pool = wait_for(
            lambda: (
                (p := stack.get_cr("providerkeypools", "gpus")) and p.get("status", {}).get("endpointCount") == 2 and p
            ),
            "the pool's endpoint count",
        )
        conditions = {c["type"]: c["status"] for c in pool["status"]["conditions"]}
        assert conditions == {"Accepted": "True", "ResolvedRefs": "True", "Programmed": "True"}

        for _ in range(6):
            assert stack.chat("mock-gpt", "sk-alice")[0] == 200
        assert (one.chats(), two.chats()) == (3, 3)  # round-robin over the two pods, no Service VIP in between
        assert stack.mock_requests() == []  # the Stack's own mock is not part of the pool

        # The second pod turns unready (as a terminating pod does): it leaves the config and gets no traffic.
        stack.api.merge_patch(
            f"{slices}/vllm-b", {"endpoints": [{"addresses": [host], "conditions": {"ready": False}}]}
        )
        wait_for(lambda: serving(stack, both[:1]), "the unready endpoint to leave the config")
        for _ in range(4):
            assert stack.chat("mock-gpt", "sk-alice")[0] == 200
        assert (one.chats(), two.chats()) == (7, 3)

        # Its slice deleted as well, then a new pod: traffic follows the slices.
        stack.api.ok("DELETE", f"{slices}/vllm-b")
        three = ModelServer(stack.workdir, "vllm-2", host)
        try:
            stack.api.ok("POST", slices, endpoint_slice("vllm-c", host, three.port))
            wait_for(lambda: serving(stack, [both[0], f"http://{host}:{three.port}/v1"]), "the new pod")
            for _ in range(4):
                assert stack.chat("mock-gpt", "sk-alice")[0] == 200
            assert (one.chats(), two.chats(), three.chats()) == (9, 3, 2)
        finally:
            three.proc.stop()

    finally:
        one.proc.stop()
        two.proc.stop()
