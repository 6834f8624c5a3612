"""The operator and the Kubernetes config source against a real API server.

Every test runs a mock LLM, `tollway operator` (as its own ServiceAccount with helm/tollway/files/rbac/
operator.yaml) and a `tollway run --kube-configmap` data plane (as its own ServiceAccount with dataplane.yaml)
as processes, applies custom resources through the API and checks what the data plane serves. A 403 in either
log fails the test: the RBAC files are what the chart installs.
"""

from __future__ import annotations

import base64
import http.client
import json
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from gateway_stack import CONFIGMAP, SECRET, Stack, core_path, cr_path, wait_for, yaml_docs

PLURALS = {
    "AIRoute": "airoutes",
    "Consumer": "consumers",
    "ProviderKeyPool": "providerkeypools",
    "TokenRateLimit": "tokenratelimits",
}


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


def quickstart(mock_url: str) -> str:
    return f"""
apiVersion: tollway.dev/v1alpha1
kind: ProviderKeyPool
metadata: {{name: mock}}
spec:
  provider: openai-compatible
  baseURL: {mock_url}/v1
  keys: [{{secretRef: {{name: upstream-keys}}}}]
  timeouts: {{connect: 2s, firstByte: 5s, idle: 5s}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-keys}}
stringData: {{key-a: upstream-key-a, key-b: upstream-key-b}}
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {{name: alice, labels: {{tier: gold}}}}
spec: {{credentials: [{{secretRef: {{name: alice-key}}}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: alice-key}}
stringData: {{apiKey: sk-alice}}
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {{name: bob}}
spec: {{credentials: [{{secretRef: {{name: bob-key}}}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bob-key}}
stringData: {{apiKey: sk-bob}}
---
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {{name: chat}}
spec:
  rules:
    - models: [mock-gpt]
      backends: [{{pool: mock}}]
"""


def route(name: str, models: list[str], pool: str = "mock") -> str:
    return yaml_docs(
        {
            "apiVersion": "tollway.dev/v1alpha1",
            "kind": "AIRoute",
            "metadata": {"name": name},
            "spec": {"rules": [{"models": models, "backends": [{"pool": pool}]}]},
        }
    )


def serves(stack: Stack, model: str, key: str = "sk-alice", status: int = 200) -> bool:
    return stack.chat(model, key)[0] == status


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


def programmed(stack: Stack, kind: str, name: str) -> dict[str, Any] | None:
    obj = stack.get_cr(PLURALS[kind], name)
    if obj is None:
        return None
    cond = conditions(obj).get("Programmed") or {}
    if cond.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
        return obj
    return None


# --------------------------------------------------------------------------------------------------------------


def test_crs_compile_into_the_configmap_and_secret(stack: Stack):
    from tollway_contract import config_to_dict, secrets_to_dict
    from tollway_operator.compiler import compile_crs

    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the data plane to serve the route")

    # What the cluster holds is exactly what the compiler makes of the objects the API server stores.
    expected = compile_crs(stack.cluster_documents())
    assert stack.rendered_hash() == expected.hash
    config, keys = stack.rendered_documents()
    assert config == json.loads(json.dumps(config_to_dict(expected.config)))
    assert keys == secrets_to_dict(expected.secrets)
    assert sorted(keys["keys"].values()) == ["upstream-key-a", "upstream-key-b"]
    assert "sk-alice" not in json.dumps(config)  # consumers are key hashes in the ConfigMap
    cm = stack.api.get(core_path(stack.namespace, "configmaps", CONFIGMAP))
    assert cm is not None and cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tollway-operator"
    assert "config.json" in cm["data"]  # small configs stay readable with kubectl

    # Every object reports that it is carried by the config, with its summary fields.
    for kind, name in (("ProviderKeyPool", "mock"), ("Consumer", "alice"), ("Consumer", "bob"), ("AIRoute", "chat")):
        obj = wait_for(lambda k=kind, n=name: programmed(stack, k, n), f"{kind} {name} Programmed")
        status = obj["status"]
        assert status["configHash"] == expected.hash
        assert {t: c["status"] for t, c in conditions(obj).items()} == {
            "Accepted": "True",
            "ResolvedRefs": "True",
            "Programmed": "True",
        }
        assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in status["conditions"])
    assert stack.get_cr("providerkeypools", "mock")["status"]["keyCount"] == 2
    assert stack.get_cr("consumers", "alice")["status"]["credentialCount"] == 1
    assert stack.get_cr("airoutes", "chat")["status"]["modelsSummary"] == "mock-gpt"

    # The data plane serves what was rendered, with the pool's keys.
    assert stack.readyz()["configHash"] == expected.hash
    assert stack.chat("mock-gpt", "sk-nobody")[0] == 401
    assert stack.mock_requests()[-1]["api_key"] in ("upstream-key-a", "upstream-key-b")

    # A change that does not touch the config (an unrelated Secret) renders, but writes nothing and patches no
    # status; a change that does not matter at all (an annotation) does not even render.
    renders, syncs = len(stack.operator_renders()), len(stack.operator_status_syncs())
    stack.api.merge_patch(cr_path(stack.namespace, "airoutes", "chat"), {"metadata": {"annotations": {"x": "y"}}})
    stack.apply(
        yaml_docs({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}, "stringData": {"a": "b"}})
    )
    later = wait_for(lambda: stack.operator_renders()[renders:], "a render after the unrelated change")
    time.sleep(0.5)
    later = stack.operator_renders()[renders:]
    assert [r["msg"] for r in later] == ["config unchanged"], later
    assert [r["patched"] for r in stack.operator_status_syncs()[syncs:]] == [0]


def test_the_data_plane_follows_route_consumer_key_and_limit_changes(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")

    # Route: the model is renamed.
    stack.apply(route("chat", ["mock-gpt-2"]))
    wait_for(lambda: serves(stack, "mock-gpt-2"), "the renamed model")
    assert stack.chat("mock-gpt", "sk-alice")[0] == 404

    # Consumer: a second credential.
    stack.apply(
        """
apiVersion: v1
kind: Secret
metadata: {name: alice-key-2}
stringData: {apiKey: sk-alice-2}
---
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {name: alice, labels: {tier: gold}}
spec: {credentials: [{secretRef: {name: alice-key}}, {secretRef: {name: alice-key-2}}]}
"""
    )
    wait_for(lambda: serves(stack, "mock-gpt-2", key="sk-alice-2"), "alice's second key")

    # Key Secret: the consumer's key is rotated in place.
    stack.apply(
        yaml_docs(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bob-key"},
                "stringData": {"apiKey": "sk-bob-rotated"},
            }
        )
    )
    wait_for(lambda: serves(stack, "mock-gpt-2", key="sk-bob-rotated"), "bob's rotated key")
    assert stack.chat("mock-gpt-2", "sk-bob")[0] == 401

    # Provider key Secret: the pool's keys change, the data plane sends the new one upstream.
    stack.apply(
        yaml_docs(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "upstream-keys"},
                "data": {"key-a": base64.b64encode(b"upstream-key-new").decode()},
            }
        )
    )

    def upstream_key_is_new() -> bool:
        stack.mock_clear()
        assert serves(stack, "mock-gpt-2")
        return stack.mock_requests()[-1]["api_key"] == "upstream-key-new"

    wait_for(upstream_key_is_new, "the rotated provider key")

    # Limit: two requests a minute, then raised.
    limit = {
        "apiVersion": "tollway.dev/v1alpha1",
        "kind": "TokenRateLimit",
        "metadata": {"name": "per-consumer"},
        "spec": {"targetRefs": [{"name": "chat"}], "limits": [{"requests": 2, "window": "1m"}]},
    }
    stack.apply(yaml_docs(limit))
    wait_for(lambda: stack.chat("mock-gpt-2", "sk-bob-rotated")[0] == 429, "the request limit")
    obj = wait_for(lambda: programmed(stack, "TokenRateLimit", "per-consumer"), "the limit Programmed")
    assert obj["status"]["limitsSummary"]
    limit["spec"]["limits"] = [{"requests": 1000, "window": "1m"}]
    stack.apply(yaml_docs(limit))
    wait_for(lambda: serves(stack, "mock-gpt-2", key="sk-bob-rotated"), "the raised limit")


def test_a_broken_object_is_rejected_while_the_rest_keeps_serving(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")
    stack.apply(
        """
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {name: broken}
spec:
  rules:
    - models: [dup]
      backends: [{pool: mock}]
    - models: [dup]
      backends: [{pool: mock}]
---
apiVersion: tollway.dev/v1alpha1
kind: AIRoute
metadata: {name: dangling}
spec:
  rules:
    - models: [dangling-model]
      backends: [{pool: nope}]
"""
    )

    def rejected() -> dict[str, Any] | None:
        obj = stack.get_cr("airoutes", "broken")
        return obj if conditions(obj).get("Accepted", {}).get("status") == "False" else None

    broken = wait_for(rejected, "broken: Accepted=False")
    accepted, prog = conditions(broken)["Accepted"], conditions(broken)["Programmed"]
    assert accepted["reason"] == "Invalid" and "already matched by spec.rules[0]" in accepted["message"]
    assert (prog["status"], prog["reason"]) == ("False", "Invalid")
    assert "configHash" not in broken["status"]

    dangling = wait_for(
        lambda: (
            (o := stack.get_cr("airoutes", "dangling"))
            and conditions(o).get("ResolvedRefs", {}).get("status") == "False"
            and o
        ),
        "dangling: ResolvedRefs=False",
    )
    assert "pool 'nope' not found" in conditions(dangling)["ResolvedRefs"]["message"]

    # Each failure is an Event on its object.
    events = wait_for(lambda: [e for e in stack.events("broken") if e["type"] == "Warning"], "a Warning event")
    assert events[0]["reason"] == "Invalid" and "already matched" in events[0]["message"]
    assert events[0]["involvedObject"]["kind"] == "AIRoute" and events[0]["involvedObject"]["uid"]
    assert wait_for(lambda: stack.events("dangling"), "an event for dangling")[0]["reason"] == "UnresolvedRefs"

    # The rest keeps serving; the broken route is simply not there.
    assert serves(stack, "mock-gpt")
    assert stack.chat("dup", "sk-alice")[0] == 404

    # Fixed: accepted and programmed, its transition time moves, the old Warning is not repeated.
    stack.apply(route("broken", ["dup"]))
    fixed = wait_for(lambda: programmed(stack, "AIRoute", "broken"), "broken, fixed, Programmed")
    assert conditions(fixed)["Accepted"]["lastTransitionTime"] >= accepted["lastTransitionTime"]
    wait_for(lambda: serves(stack, "dup"), "the fixed route")


def test_deleting_an_object_removes_its_effect(stack: Stack):
    stack.apply(quickstart(stack.mock_url) + "---\n" + route("extra", ["extra-model"]))
    wait_for(lambda: serves(stack, "extra-model") and serves(stack, "mock-gpt", key="sk-bob"), "both routes")
    stack.cp.kubectl("delete", "airoute", "extra", "-n", stack.namespace)
    wait_for(lambda: stack.chat("extra-model", "sk-alice")[0] == 404, "the deleted route to disappear")
    stack.cp.kubectl("delete", "consumer", "bob", "-n", stack.namespace)
    wait_for(lambda: stack.chat("mock-gpt", "sk-bob")[0] == 401, "the deleted consumer's key to stop working")
    assert serves(stack, "mock-gpt")
    # Without its pool the route still answers, with a clear error instead of a 404, and says why.
    stack.cp.kubectl("delete", "providerkeypool", "mock", "-n", stack.namespace)
    wait_for(lambda: stack.chat("mock-gpt", "sk-alice")[0] == 503, "the route without a pool to answer 503")
    resolved = wait_for(
        lambda: (c := conditions(stack.get_cr("airoutes", "chat"))["ResolvedRefs"])["status"] == "False" and c,
        "ResolvedRefs=False on the route",
    )
    assert "pool 'mock' not found" in resolved["message"]


def test_a_generated_consumer_key_is_owned_by_the_consumer_and_works(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    stack.apply(
        """
apiVersion: tollway.dev/v1alpha1
kind: Consumer
metadata: {name: robot}
spec:
  credentials: [{secretRef: {name: robot-key, key: token}, generate: true}]
"""
    )
    secret = wait_for(lambda: stack.api.get(core_path(stack.namespace, "secrets", "robot-key")), "the generated key")
    consumer = stack.get_cr("consumers", "robot")
    [owner] = secret["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "tollway.dev/v1alpha1",
        "kind": "Consumer",
        "name": "robot",
        "uid": consumer["metadata"]["uid"],
        "controller": True,
    }
    key = base64.b64decode(secret["data"]["token"]).decode()
    assert key.startswith("sk-tollway-") and len(key) == len("sk-tollway-") + 48
    wait_for(lambda: serves(stack, "mock-gpt", key=key), "the generated key to authenticate")
    robot = wait_for(lambda: programmed(stack, "Consumer", "robot"), "robot Programmed")
    assert robot["status"]["credentialCount"] == 1
    assert conditions(robot)["ResolvedRefs"]["status"] == "True"
    assert key not in stack.operator.log() and key not in stack.dataplane.log()
    events = wait_for(lambda: stack.events("robot"), "the KeyGenerated event")
    assert [e["reason"] for e in events] == ["KeyGenerated"]  # no Warning for a key that is being generated


def test_watches_resume_after_an_api_server_restart(stack: Stack, control_plane: ControlPlane):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")
    before = stack.readyz()["configHash"]

    downtime = {"served": 0, "failed": 0}
    stop = threading.Event()

    def keep_calling() -> None:
        while not stop.is_set():
            downtime["served" if serves(stack, "mock-gpt") else "failed"] += 1
            time.sleep(0.05)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    restarted = time.time()
    try:
        took = control_plane.restart_apiserver(downtime=1.0)
    finally:
        stop.set()
        caller.join()
    stack.tolerate_forbidden(restarted, time.time() + 2)  # RBAC warms up just after the restart
    print(f"\n[e2e] kube-apiserver restarted in {took:.1f}s; data plane served {downtime} meanwhile")
    assert downtime["failed"] == 0 and downtime["served"] > 0  # the data plane never depended on the API

    stack.apply(route("chat", ["after-restart"]))
    wait_for(lambda: serves(stack, "after-restart"), "a change made after the restart", timeout=60)
    assert stack.readyz()["configHash"] != before
    stack.apply(
        yaml_docs(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alice-key"},
                "stringData": {"apiKey": "sk-alice-after"},
            }
        )
    )
    wait_for(lambda: serves(stack, "after-restart", key="sk-alice-after"), "a Secret change after the restart")
    assert stack.operator.alive() and stack.dataplane.alive()


def test_an_open_stream_survives_a_config_change(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")
    stack.mock_script({"chunks": 12, "chunk_delay_ms": 250})
    host, port = stack.dataplane_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Authorization": "Bearer sk-alice"})
    response = conn.getresponse()
    assert response.status == 200
    first = response.readline()
    assert first.startswith(b"data: ")
    before = stack.readyz()["configHash"]

    # Mid-stream: the route's model changes and the caller's key is rotated, through the API.
    stack.apply(route("chat", ["mock-gpt-next"]))
    stack.apply(
        yaml_docs(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alice-key"},
                "stringData": {"apiKey": "sk-alice-next"},
            }
        )
    )
    wait_for(lambda: serves(stack, "mock-gpt-next", key="sk-alice-next"), "the new config", timeout=10)
    assert stack.readyz()["configHash"] != before

    rest = response.read().decode()
    conn.close()
    payloads = [line[5:].strip() for line in [first.decode(), *rest.splitlines()] if line.startswith("data:")]
    assert payloads[-1] == "[DONE]", payloads[-3:]
    words = "".join(
        json.loads(p)["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if json.loads(p)["choices"]
    )
    assert len(words.split()) == 12  # every chunk arrived, on the snapshot the stream started with


def test_change_to_data_plane_latency(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")
    path = cr_path(stack.namespace, "airoutes", "chat")
    latencies = []
    for i in range(25):
        model = f"latency-{i}"
        started = time.perf_counter()
        stack.api.merge_patch(path, {"spec": {"rules": [{"models": [model], "backends": [{"pool": "mock"}]}]}})
        wait_for(lambda m=model: m in stack.models("sk-alice"), f"model {model}", timeout=10, interval=0.005)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"\n[e2e] CR change -> data-plane effect over {len(latencies)} changes: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms "
        f"(operator debounce 0.2 s)"
    )


def consumer_objects(ns: str, count: int, prefix: str = "c") -> list[tuple[str, dict[str, Any]]]:
    """`count` Consumers (keys sk-<prefix>NNNNN) and the Secrets holding their keys, 1,000 keys per Secret."""
    keys: dict[int, dict[str, str]] = {}
    for i in range(count):
        keys.setdefault(i // 1000, {})[f"k{i:05d}"] = base64.b64encode(f"sk-{prefix}{i:05d}".encode()).decode()
    objects: list[tuple[str, dict[str, Any]]] = [
        (
            core_path(ns, "secrets"),
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{prefix}-keys-{j}"}, "data": data},
        )
        for j, data in keys.items()
    ]
    for i in range(count):
        credential = {"secretRef": {"name": f"{prefix}-keys-{i // 1000}", "key": f"k{i:05d}"}}
        objects.append(
            (
                cr_path(ns, "consumers"),
                {
                    "apiVersion": "tollway.dev/v1alpha1",
                    "kind": "Consumer",
                    "metadata": {"name": f"{prefix}{i:05d}", "labels": {"tier": "gold" if i % 2 else "free"}},
                    "spec": {"credentials": [credential]},
                },
            )
        )
    return objects


def test_a_burst_of_500_applies_becomes_a_handful_of_renders(stack: Stack):
    stack.apply(quickstart(stack.mock_url))
    wait_for(lambda: serves(stack, "mock-gpt"), "the route")
    before = len(stack.operator_renders())
    started = time.perf_counter()
    stack.api.create_many(consumer_objects(stack.namespace, 500, prefix="burst"), threads=8)
    burst = time.perf_counter() - started
    wait_for(lambda: serves(stack, "mock-gpt", key="sk-burst00499"), "the last consumer of the burst", timeout=30)
    time.sleep(0.5)
    renders = stack.operator_renders()[before:]
    print(
        f"\n[e2e] 500 creates in {burst:.1f}s -> {len(renders)} renders "
        f"({sum(r['msg'] == 'config written' for r in renders)} writes): "
        + ", ".join(f"{r['trigger']} {r['waited_seconds']}s {r['changes']} changes" for r in renders)
    )
    # Each render waited for a quiet 0.2 s or for the 2 s maximum; a loaded host's API server pauses now and
    # then, and a pause is a quiet moment, so the count depends on the host: what must hold is that no render
    # came early and that renders absorbed the burst in batches, not one by one.
    assert renders
    for render in renders:
        assert render["waited_seconds"] >= 0.19, render
        assert render["trigger"] == "quiet" or render["waited_seconds"] >= 1.9, render
    assert sum(r["changes"] for r in renders) >= 500
    assert len(renders) <= 25  # 20 or more changes a render on average
    assert serves(stack, "mock-gpt", key="sk-burst00000")


def test_ten_thousand_consumers_and_a_thousand_routes(
    control_plane: ControlPlane, crds_installed, namespace: str, tmp_path: Path
):
    """The operator starts on 10,000 Consumers and 1,000 AIRoutes: one render, compressed and (with a lowered
    object size) sharded; the data plane assembles the shards and serves every consumer and route."""
    s = Stack(control_plane, namespace, tmp_path)
    try:
        s.start_mock()
        s.install_rbac()
        ns = namespace
        consumers, routes = 10_000, 1_000
        objects = consumer_objects(ns, consumers)
        objects.append(
            (
                cr_path(ns, "providerkeypools"),
                {
                    "apiVersion": "tollway.dev/v1alpha1",
                    "kind": "ProviderKeyPool",
                    "metadata": {"name": "mock"},
                    "spec": {"provider": "openai-compatible", "baseURL": f"{s.mock_url}/v1"},
                },
            )
        )
        for i in range(routes):
            rule = {"models": [f"m{i:04d}", f"m{i:04d}-*"], "backends": [{"pool": "mock"}]}
            objects.append(
                (
                    cr_path(ns, "airoutes"),
                    {
                        "apiVersion": "tollway.dev/v1alpha1",
                        "kind": "AIRoute",
                        "metadata": {"name": f"r{i:04d}"},
                        "spec": {"rules": [rule]},
                    },
                )
            )
        started = time.perf_counter()
        s.api.create_many(objects)
        created = time.perf_counter() - started

        started = time.perf_counter()
        s.start_operator("--max-object-bytes", str(160 * 1024), timeout=180)
        [render] = [r for r in s.operator_renders() if r["msg"] == "config written"]
        assert (render["consumers"], render["routes"]) == (consumers, routes)  # one render, never a partial one
        digest = render["hash"]
        s.start_dataplane()
        wait_for(lambda: s.readyz().get("configHash") == digest, "the data plane to load it", timeout=60)
        loaded = time.perf_counter() - started
        assert s.chat("m0999-x", "sk-c09999")[0] == 200
        assert s.chat("m0000", "sk-c00000")[0] == 200

        cm = s.api.get(core_path(ns, "configmaps", CONFIGMAP))
        manifest = json.loads(cm["data"]["manifest.json"])
        assert manifest["encoding"] == "gzip" and len(manifest["shards"]) == render["shards"] >= 2, manifest
        for name in manifest["shards"]:
            shard = s.api.get(core_path(ns, "configmaps", name))
            assert shard["metadata"]["annotations"]["tollway.dev/config-hash"] == digest
        secret = s.api.get(core_path(ns, "secrets", SECRET))
        assert secret["metadata"]["annotations"]["tollway.dev/config-hash"] == digest
        config, _ = s.rendered_documents()
        assert len(config["consumers"]) == consumers and len(config["routes"]) == routes

        # Statuses follow in the background, one PATCH per object (the slowest part on a small machine).
        wait_for(lambda: programmed(s, "Consumer", "c00000"), "statuses being written", timeout=60)
        syncs = s.operator_status_syncs()
        statuses = f"{syncs[0]['patched']} statuses in {syncs[0]['seconds']:.0f}s" if syncs else "statuses in progress"
        print(
            f"\n[e2e] {consumers} consumers + {routes} routes ({len(objects)} objects created in {created:.0f}s): "
            f"operator start to data plane serving {loaded:.1f}s; render: compile {render['compile_seconds']:.2f}s, "
            f"write {render['write_seconds']:.2f}s, {render['config_bytes'] / 1e6:.2f} MB JSON -> "
            f"{render['stored_bytes'] / 1e6:.2f} MB gzip in {render['shards']} shards of <= 160 KiB; {statuses}"
        )
    finally:
        s.stop()
    forbidden = s.forbidden()
    assert not forbidden, "RBAC is missing a permission:\n" + "\n".join(forbidden)
