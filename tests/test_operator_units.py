"""The operator's pure parts: the rendered-object format, status conditions, key generation, debouncing, RBAC."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tollway_contract import config_from_dict, config_to_dict
from tollway_contract.rendered import (
    HASH_ANNOTATION,
    MANIFEST_KEY,
    MAX_OBJECT_BYTES,
    MAX_SHARDS,
    SHARD_KEY,
    FormatError,
    Manifest,
    decode_document,
    default_secret_name,
    encode_document,
    object_blobs,
    rendered_objects,
)
from tollway_dataplane.sources import Loaded, Reloader
from tollway_operator.compiler import compile_crs
from tollway_operator.conditions import (
    desired_status,
    failing_transitions,
    merge_conditions,
    programmed_condition,
    status_patch,
)
from tollway_operator.controller import Controller, relevant_state
from tollway_operator.keygen import KEY_PREFIX, generated_secret, new_api_key
from tollway_operator.options import OperatorOptions
from tollway_operator.resources.consumer import CredentialRequest
from tollway_operator.status import Condition, ObjectRef, ObjectStatus

RBAC_DIR = Path(__file__).resolve().parents[1] / "helm" / "tollway" / "files" / "rbac"


# -- the rendered-object format ------------------------------------------------------------------------------------


def roundtrip(kind: str, payload: bytes, **limits: int) -> tuple[list[dict[str, Any]], bytes]:
    """Encode into objects as the operator writes them, then read them back as the data plane does."""
    rendered = encode_document("config.json", payload, "sha256:abc", "tollway-config", **limits)
    objects = rendered_objects(kind, "tollway-config", "ns", rendered)
    # Objects travel as JSON through the API server.
    objects = [orjson.loads(orjson.dumps(o)) for o in objects]
    main = objects[-1]
    blobs = object_blobs(main)
    manifest = Manifest.from_json(blobs[MANIFEST_KEY])
    shards = {o["metadata"]["name"]: object_blobs(o)[SHARD_KEY] for o in objects[:-1]}
    pieces = [shards[name] for name in manifest.shards] if manifest.shards else None
    return objects, decode_document(manifest, blobs, pieces)


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_small_documents_stay_plain_and_readable(kind: str) -> None:
    payload = orjson.dumps({"version": 1, "hash": "sha256:abc", "routes": []})
    objects, back = roundtrip(kind, payload)
    assert back == payload
    [main] = objects
    assert main["metadata"]["annotations"][HASH_ANNOTATION] == "sha256:abc"
    if kind == "ConfigMap":
        assert main["data"]["config.json"] == payload.decode()  # kubectl shows it as is
        assert "binaryData" not in main


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_large_documents_are_gzipped_then_sharded(kind: str) -> None:
    rows = [{"name": f"ns/consumer-{i}", "keyHashes": [f"{i:064x}"]} for i in range(5000)]
    payload = orjson.dumps({"consumers": rows})
    objects, back = roundtrip(kind, payload, max_object_bytes=16 * 1024, plain_limit=1024)
    assert back == payload
    names = [o["metadata"]["name"] for o in objects]
    assert names[-1] == "tollway-config" and names[:-1] == [f"tollway-config-{i}" for i in range(1, len(names))]
    assert len(names) > 2
    manifest = Manifest.from_json(object_blobs(objects[-1])[MANIFEST_KEY])
    assert manifest.encoding == "gzip" and manifest.size < len(payload) / 2
    for i, shard in enumerate(objects[:-1], start=1):
        assert shard["metadata"]["annotations"][HASH_ANNOTATION] == "sha256:abc"
        assert shard["metadata"]["annotations"]["tollway.dev/shard"] == f"{i}/{len(objects) - 1}"


def test_gzip_fits_inline_before_sharding() -> None:
    payload = b'{"x": "' + b"a" * 400_000 + b'"}'
    objects, back = roundtrip("ConfigMap", payload)
    assert back == payload and len(objects) == 1
    assert "config.json.gz" in objects[0]["binaryData"]


def test_too_many_shards_is_an_error() -> None:
    payload = random.Random(1).randbytes(256 * 1024)  # incompressible
    with pytest.raises(FormatError, match="at most 2 shards"):
        encode_document("config.json", payload, "sha256:x", "n", max_object_bytes=64 * 1024, max_shards=2)


def test_pieces_of_two_versions_are_refused() -> None:
    """A reader that sees the old manifest while new shards are being written waits instead of mixing them."""
    rng = random.Random(2)
    old = encode_document("config.json", rng.randbytes(20_000), "sha256:old", "n", max_object_bytes=4096)
    new = encode_document("config.json", rng.randbytes(20_000), "sha256:new", "n", max_object_bytes=4096)
    assert len(old.shards) == len(new.shards) > 1
    assert decode_document(old.manifest, old.main, list(old.shards))
    mixed = [new.shards[0], *old.shards[1:]]
    with pytest.raises(FormatError):
        decode_document(old.manifest, old.main, mixed)
    with pytest.raises(FormatError):
        decode_document(old.manifest, old.main, [])


def test_unknown_manifest_format_is_refused() -> None:
    with pytest.raises(FormatError, match="format"):
        Manifest.from_json(b'{"format": 2}')
    with pytest.raises(FormatError):
        Manifest.from_json(b"not json")


def test_default_secret_name_follows_the_configmap() -> None:
    assert default_secret_name("tollway-config") == "tollway-provider-keys"
    assert default_secret_name("gateway") == "gateway-provider-keys"


def big_crs(consumers: int, routes: int, namespace: str = "e2e-big") -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "tollway.dev/v1alpha1",
            "kind": "ProviderKeyPool",
            "metadata": {"name": "mock", "namespace": namespace, "generation": 1},
            "spec": {"provider": "openai-compatible", "baseURL": "http://127.0.0.1:9/v1"},
        }
    ]
    keys: dict[int, dict[str, str]] = {}
    for i in range(consumers):
        docs.append(
            {
                "apiVersion": "tollway.dev/v1alpha1",
                "kind": "Consumer",
                "metadata": {"name": f"consumer-{i:05d}", "namespace": namespace, "generation": 1},
                "spec": {"credentials": [{"secretRef": {"name": f"keys-{i // 1000}", "key": f"k{i:05d}"}}]},
            }
        )
        keys.setdefault(i // 1000, {})[f"k{i:05d}"] = base64.b64encode(f"sk-c-{i:05d}-{'x' * 24}".encode()).decode()
    docs += [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"keys-{j}", "namespace": namespace}, "data": d}
        for j, d in keys.items()
    ]
    for i in range(routes):
        docs.append(
            {
                "apiVersion": "tollway.dev/v1alpha1",
                "kind": "AIRoute",
                "metadata": {"name": f"route-{i:04d}", "namespace": namespace, "generation": 1},
                "spec": {"rules": [{"models": [f"model-{i:04d}", f"model-{i:04d}-*"], "backends": [{"pool": "mock"}]}]},
            }
        )
    return docs


def test_ten_thousand_consumers_fit_one_compressed_object() -> None:
    started = time.perf_counter()
    result = compile_crs(big_crs(10_000, 1_000))
    compiled = time.perf_counter() - started
    payload = orjson.dumps(config_to_dict(result.config))
    rendered = encode_document("config.json", payload, result.hash, "tollway-config")
    print(
        f"\n10,000 consumers + 1,000 routes: compile {compiled:.2f}s, JSON {len(payload) / 1e6:.2f} MB, "
        f"gzip {rendered.manifest.size / 1e6:.2f} MB, shards {len(rendered.shards)}"
    )
    assert len(payload) > 1024 * 1024  # would not fit a ConfigMap uncompressed
    assert rendered.manifest.encoding == "gzip" and not rendered.shards
    assert rendered.manifest.size <= MAX_OBJECT_BYTES
    config = config_from_dict(orjson.loads(decode_document(rendered.manifest, rendered.main)))
    assert len(config.consumers) == 10_000 and len(config.routes) == 1_000 and config.hash == result.hash


# -- status conditions ---------------------------------------------------------------------------------------------

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_last_transition_time_moves_only_when_the_status_does() -> None:
    first = merge_conditions(None, [Condition("Accepted", "True", "Accepted", "ok")], 1, T0)
    assert first == [
        {
            "type": "Accepted",
            "status": "True",
            "reason": "Accepted",
            "message": "ok",
            "lastTransitionTime": T0,
            "observedGeneration": 1,
        }
    ]
    # Same status, new message and generation: the transition time stays.
    same = merge_conditions(first, [Condition("Accepted", "True", "AcceptedWithWarnings", "hm")], 2, T1)
    assert same[0]["lastTransitionTime"] == T0
    assert (same[0]["reason"], same[0]["message"], same[0]["observedGeneration"]) == ("AcceptedWithWarnings", "hm", 2)
    flipped = merge_conditions(same, [Condition("Accepted", "False", "Invalid", "bad")], 3, T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_conditions_of_other_owners_are_kept() -> None:
    theirs = {"type": "Audited", "status": "True", "reason": "Done", "message": "", "lastTransitionTime": T0}
    merged = merge_conditions([theirs], [Condition("Accepted", "True", "Accepted", "ok")], 1, T1)
    assert [c["type"] for c in merged] == ["Accepted", "Audited"] and merged[1] is theirs


def status_for(**problems: list[str]) -> ObjectStatus:
    status = ObjectStatus(ObjectRef("AIRoute", "ns", "chat"), generation=4, **problems)
    status.extra["models"] = ["gpt-4o"]
    status.extra["modelsSummary"] = "gpt-4o"
    return status


def test_desired_status_of_a_programmed_object() -> None:
    desired = desired_status(status_for(), in_config=True, config_hash="sha256:1", current=None, now=T0)
    assert desired["observedGeneration"] == 4 and desired["configHash"] == "sha256:1"
    assert {c["type"]: c["status"] for c in desired["conditions"]} == {
        "Accepted": "True",
        "ResolvedRefs": "True",
        "Programmed": "True",
    }
    assert desired["models"] == ["gpt-4o"] and desired["modelsSummary"] == "gpt-4o"


def test_rejected_and_unresolved_objects_are_not_programmed() -> None:
    rejected = programmed_condition(status_for(invalid=["spec.rules: bad"]), in_config=False)
    assert (rejected.status, rejected.reason) == ("False", "Invalid")
    unresolved = programmed_condition(status_for(unresolved=["pool 'x' not found"]), in_config=False)
    assert (unresolved.status, unresolved.reason) == ("False", "UnresolvedRefs")
    assert "pool 'x' not found" in unresolved.message
    desired = desired_status(status_for(invalid=["bad"]), in_config=False, config_hash=None, current=None, now=T0)
    assert desired["configHash"] is None


def test_an_unchanged_status_is_not_patched_again() -> None:
    desired = desired_status(status_for(), in_config=True, config_hash="sha256:1", current=None, now=T0)
    stored = orjson.loads(orjson.dumps(desired))
    again = desired_status(status_for(), in_config=True, config_hash="sha256:1", current=stored, now=T1)
    assert status_patch(stored, again) is None
    # A hash change patches only what changed; a removed field is null in the merge patch.
    moved = desired_status(status_for(), in_config=True, config_hash="sha256:2", current=stored, now=T1)
    assert status_patch(stored, moved) == {"configHash": "sha256:2"}
    gone = desired_status(status_for(invalid=["bad"]), in_config=False, config_hash=None, current=stored, now=T1)
    patch = status_patch(stored, gone)
    assert patch is not None and patch["configHash"] is None and "conditions" in patch


def test_warning_events_only_on_transitions_to_false() -> None:
    ok = merge_conditions(None, [Condition("ResolvedRefs", "True", "ResolvedRefs", "ok")], 1, T0)
    bad = merge_conditions(ok, [Condition("ResolvedRefs", "False", "UnresolvedRefs", "pool 'x' not found")], 1, T1)
    assert [c["message"] for c in failing_transitions(ok, bad)] == ["pool 'x' not found"]
    assert failing_transitions(bad, bad) == []  # still failing for the same reason: no new event
    worse = merge_conditions(bad, [Condition("ResolvedRefs", "False", "UnresolvedRefs", "pool 'y' not found")], 1, T1)
    assert len(failing_transitions(bad, worse)) == 1


def test_relevant_state_ignores_status_and_resource_version() -> None:
    body = {"metadata": {"uid": "u", "generation": 3, "labels": {"a": "b"}, "resourceVersion": "1"}, "status": {}}
    patched = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}, "status": {"configHash": "x"}}
    assert relevant_state("Consumer", body) == relevant_state("Consumer", patched)
    relabelled = {**body, "metadata": {**body["metadata"], "labels": {"a": "c"}}}
    assert relevant_state("Consumer", body) != relevant_state("Consumer", relabelled)
    secret = {"metadata": {"uid": "s"}, "data": {"k": "YQ=="}}
    assert relevant_state("Secret", secret) != relevant_state("Secret", {**secret, "data": {"k": "Yg=="}})


# -- generated keys ------------------------------------------------------------------------------------------------


def test_generated_keys_are_random_and_owned_by_the_consumer() -> None:
    key = new_api_key()
    assert key.startswith(KEY_PREFIX) and re.fullmatch(r"[A-Za-z0-9_-]{48}", key[len(KEY_PREFIX) :])
    assert new_api_key() != key
    secret = generated_secret(CredentialRequest("team", "alice", "alice-key", "token"), "uid-1", key=key)
    assert base64.b64decode(secret["data"]["token"]).decode() == key
    [owner] = secret["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "tollway.dev/v1alpha1",
        "kind": "Consumer",
        "name": "alice",
        "uid": "uid-1",
        "controller": True,
    }
    assert secret["metadata"]["namespace"] == "team"


# -- debouncing ----------------------------------------------------------------------------------------------------


async def test_a_burst_of_changes_becomes_a_handful_of_renders() -> None:
    options = OperatorOptions(namespaces=("ns",), debounce=0.05, max_delay=0.5, resync=0)
    controller = Controller(options, client=None)  # type: ignore[arg-type]
    renders: list[tuple[str, float]] = []

    async def render_once(*, trigger: str, waited: float) -> None:
        renders.append((trigger, waited))

    async def nothing_listed() -> set[str]:
        return set()

    controller.render_once = render_once  # type: ignore[method-assign]
    controller._list_uids = nothing_listed  # type: ignore[method-assign]
    task = asyncio.create_task(controller.run())
    try:
        for i in range(500):  # 500 applies over about a second and a half
            body = {"metadata": {"name": f"c{i}", "namespace": "ns", "uid": str(i), "generation": 1}}
            controller.observe("Consumer", "ADDED", body)
            await asyncio.sleep(0.003)
        await asyncio.sleep(0.3)
        burst = len(renders)
        # A status-only update is not a change.
        controller.observe("Consumer", "MODIFIED", {"metadata": body["metadata"], "status": {"configHash": "x"}})
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
    assert 1 <= burst <= 6, renders
    assert len(renders) == burst
    # Every render waited for a quiet moment or the whole maximum delay; the last one (after the burst) for quiet.
    assert all(waited >= 0.05 and (trigger == "quiet" or waited >= 0.5) for trigger, waited in renders), renders
    assert renders[-1][0] == "quiet", renders


# -- the reloader's wake-up hook -----------------------------------------------------------------------------------


class _NotifyingSource:
    def __init__(self, loaded: Loaded):
        self.loaded = loaded
        self.version = 0
        self.notify: Any = None

    def describe(self) -> str:
        return "test"

    def fingerprint(self) -> object:
        return self.version

    def load(self) -> Loaded:
        return self.loaded

    def subscribe(self, notify: Any) -> None:
        self.notify = notify


async def test_a_notifying_source_wakes_the_reloader_at_once() -> None:
    from tollway_contract import GatewayConfig, SecretsConfig
    from tollway_dataplane.app import Gateway

    source = _NotifyingSource(Loaded(GatewayConfig(hash="sha256:1"), SecretsConfig(hash="sha256:1")))
    gateway = Gateway()
    reloader = Reloader(gateway, source, interval=3600)
    task = asyncio.create_task(reloader.run())
    try:
        for _ in range(3000):
            if gateway.snapshot is not None and source.notify is not None:
                break
            await asyncio.sleep(0.01)
        assert gateway.snapshot is not None and gateway.snapshot.hash == "sha256:1"
        source.loaded = Loaded(GatewayConfig(hash="sha256:2"), SecretsConfig(hash="sha256:2"))
        source.version = 1
        started = time.monotonic()
        source.notify()
        while gateway.snapshot.hash != "sha256:2":
            # The poll interval is an hour: anything well short of it proves the notification woke the reloader.
            assert time.monotonic() - started < 60.0, "the reloader waited for its poll interval"
            await asyncio.sleep(0.005)
    finally:
        task.cancel()


# -- RBAC ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["operator.yaml", "dataplane.yaml"])
def test_rbac_names_every_shard_the_format_can_use(name: str) -> None:
    text = (RBAC_DIR / name).read_text()
    for placeholder in ("__CONFIGMAP__", "__SECRET__"):
        listed = set(re.findall(rf"^\s*- ({placeholder}(?:-\d+)?)$", text, re.M))
        assert listed == {placeholder} | {f"{placeholder}-{i}" for i in range(1, MAX_SHARDS + 1)}
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert all(d["metadata"]["name"].startswith("__NAME__") for d in docs)


def test_dataplane_rbac_is_read_only() -> None:
    docs = [d for d in yaml.safe_load_all((RBAC_DIR / "dataplane.yaml").read_text()) if d]
    [role] = [d for d in docs if d["kind"] == "Role"]
    for rule in role["rules"]:
        assert set(rule["verbs"]) == {"get", "list", "watch"} and rule["resourceNames"]


# -- the Kubernetes source against a fake API server ---------------------------------------------------------------


class FakeAPI:
    """Just enough of the API server: list and watch by name (the first watch answers 410 Gone), get by name."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 1
        self.lists = 0
        self.watches: list[asyncio.Queue[dict[str, Any] | None]] = []
        self.expired_once = False

    def put(self, plural: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        key = (plural, obj["metadata"]["name"])
        kind = "ADDED" if key not in self.objects else "MODIFIED"
        self.objects[key] = obj
        for queue in self.watches:
            queue.put_nowait({"type": kind, "object": obj, "plural": plural})

    def app(self) -> Any:
        from aiohttp import web

        async def collection(request: web.Request) -> web.StreamResponse:
            plural = request.match_info["plural"]
            name = request.query["fieldSelector"].removeprefix("metadata.name=")
            if request.query.get("watch") != "1":
                self.lists += 1
                items = [o for (p, n), o in self.objects.items() if p == plural and n == name]
                return web.json_response({"metadata": {"resourceVersion": str(self.version)}, "items": items})
            response = web.StreamResponse()
            await response.prepare(request)
            if not self.expired_once:
                self.expired_once = True
                await response.write(orjson.dumps({"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}))
                await response.write(b"\n")
                return response
            queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            self.watches.append(queue)
            while (event := await queue.get()) is not None:
                if event.pop("plural") == plural and event["object"]["metadata"]["name"] == name:
                    await response.write(orjson.dumps(event) + b"\n")
            return response

        async def item(request: web.Request) -> web.Response:
            obj = self.objects.get((request.match_info["plural"], request.match_info["name"]))
            return web.json_response(obj) if obj else web.json_response({"reason": "NotFound"}, status=404)

        app = web.Application()
        app.router.add_get("/api/v1/namespaces/ns/{plural}", collection)
        app.router.add_get("/api/v1/namespaces/ns/{plural}/{name}", item)
        return app

    def publish(self, result: Any, max_object_bytes: int) -> None:
        """Write like the operator: shards, then the Secret, then the ConfigMap."""
        config = encode_document(
            "config.json",
            orjson.dumps(config_to_dict(result.config)),
            result.hash,
            "tollway-config",
            max_object_bytes=max_object_bytes,
            plain_limit=0,
        )
        keys = encode_document(
            "secrets.json",
            orjson.dumps({"version": 1, "hash": result.hash, "keys": dict(result.secrets.keys)}),
            result.hash,
            "tollway-provider-keys",
        )
        cm_objects = rendered_objects("ConfigMap", "tollway-config", "ns", config)
        for obj in cm_objects[:-1]:
            self.put("configmaps", obj)
        self.put("secrets", rendered_objects("Secret", "tollway-provider-keys", "ns", keys)[-1])
        self.put("configmaps", cm_objects[-1])


def small_crs(model: str) -> list[dict[str, Any]]:
    docs = big_crs(300, 2, namespace="ns")
    docs[-1]["spec"]["rules"][0]["models"] = [model]
    return docs


async def test_kube_source_relists_on_410_and_follows_sharded_changes() -> None:
    from conftest import start_app
    from tollway_dataplane.kubesource import KubeSource
    from tollway_kube.client import KubeCredentials

    api = FakeAPI()
    first = compile_crs(small_crs("first"))
    api.publish(first, max_object_bytes=4096)
    assert len([k for k in api.objects if k[0] == "configmaps"]) > 2  # sharded
    runner, port = await start_app(api.app())
    source = KubeSource("ns", "tollway-config", credentials=KubeCredentials(server=f"http://127.0.0.1:{port}"))
    woken: list[float] = []
    source.subscribe(lambda: woken.append(time.monotonic()))
    try:
        assert await asyncio.to_thread(source.fingerprint) == first.hash
        loaded = await asyncio.to_thread(source.load)
        assert loaded.config.hash == loaded.secrets.hash == first.hash and len(loaded.config.consumers) == 300

        async def wait_for_hash(digest: str) -> None:
            for _ in range(750):  # generous: a loaded CI machine must not turn this into a flake
                if await asyncio.to_thread(source.fingerprint) == digest:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"the source never reached {digest}")

        # The first watch expired: the source listed again, and follows the new watch.
        for _ in range(750):  # both watches (ConfigMap and Secret) must be open: the fake does not replay events
            if api.lists >= 3 and len(api.watches) >= 2:
                break
            await asyncio.sleep(0.02)
        assert api.lists >= 3
        second = compile_crs(small_crs("second"))
        api.publish(second, max_object_bytes=4096)
        await wait_for_hash(second.hash)
        assert woken, "the source did not notify its listener"
        routes = (await asyncio.to_thread(source.load)).config.routes
        assert "second" in routes[-1].rules[0].models

        # A config whose keys have not arrived yet is not offered.
        third = compile_crs(small_crs("third"))
        config = encode_document(
            "config.json", orjson.dumps(config_to_dict(third.config)), third.hash, "tollway-config"
        )
        api.put("configmaps", rendered_objects("ConfigMap", "tollway-config", "ns", config)[-1])
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(source.fingerprint) == second.hash
    finally:
        for queue in api.watches:
            queue.put_nowait(None)
        source.close()
        await runner.cleanup()
