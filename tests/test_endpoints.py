"""Inference-aware balancing, the pure parts: the contract and the compiler's `endpoints`, EndpointSlices, the
metric parsers, the prefix key, the pickers and the balancer's skip rules, the operator's slice bookkeeping.

Every clock is passed in: nothing here waits or measures time.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from tollway_contract import ConfigError, config_from_dict, config_to_dict
from tollway_contract.model import EndpointMetrics, Endpoints, Pool
from tollway_dataplane.call import CHAT, COMPLETIONS
from tollway_dataplane.endpoints import pickers
from tollway_dataplane.endpoints.balancer import Member, Refusal
from tollway_dataplane.endpoints.exposition import ExpositionError, parse_load
from tollway_dataplane.endpoints.prefix import BLOCK_CHARS, leading_text, prefix_key
from tollway_dataplane.endpoints.state import Estimate, Load, address_of, metrics_url
from tollway_dataplane.intake import make_call
from tollway_dataplane.pools import KeyStateRegistry, PoolRuntime
from tollway_mock.engine import Report
from tollway_mock.exposition import render
from tollway_operator.compiler import compile_crs
from tollway_operator.controller import Controller, relevant_state, slice_document
from tollway_operator.options import OperatorOptions
from tollway_operator.status import ObjectRef

URLS = ("http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1", "http://10.0.0.4:8000/v1")
NOW = 1000.0


def chat(*messages: tuple[str, str], endpoint: str = CHAT) -> Any:
    body = {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}
    return make_call(endpoint, body, orjson.dumps(body))


def pool(urls: tuple[str, ...] = URLS, **settings: Any) -> PoolRuntime:
    settings.setdefault("metrics", EndpointMetrics(format="vllm", interval=1.0))
    config = Pool(name="ns/gpu", provider="openai-compatible", base_url="", endpoints=Endpoints(urls=urls, **settings))
    return PoolRuntime(config, {}, KeyStateRegistry())


def scraped(runtime: PoolRuntime, **loads: tuple[float, float, float]) -> list[Member]:
    """Give each endpoint (by host: a=10.0.0.1, b=10.0.0.2, ...) a fresh scrape of (waiting, running, kv)."""
    assert runtime.endpoints is not None
    members = list(runtime.endpoints.members)
    for member in members:
        name = "abcd"[int(member.url.split(".")[3].split(":")[0]) - 1]
        waiting, running, kv = loads.get(name, (0, 0, 0))
        member.state.first_seen = NOW - 100
        member.state.record_scrape(Load(waiting, running, kv), NOW)
    return members


def host(picked: Member | Refusal) -> str:
    assert isinstance(picked, Member), picked
    return "abcd"[int(picked.url.split(".")[3].split(":")[0]) - 1]


# -- the contract ---------------------------------------------------------------------------------------------------


def test_a_pool_with_endpoints_needs_no_base_url_and_round_trips() -> None:
    doc = {
        "version": 1,
        "pools": [
            {
                "name": "ns/gpu",
                "provider": "openai-compatible",
                "endpoints": {
                    "urls": ["http://10.0.0.1:8000/v1/", "http://10.0.0.2:8000/v1"],
                    "picker": "prefix-affinity",
                    "metrics": {"format": "sglang", "interval": 0.5},
                    "maxQueue": 8,
                    "prefixChars": 2048,
                },
            }
        ],
    }
    config = config_from_dict(doc)
    endpoints = config.pools[0].endpoints
    assert config.pools[0].base_url == ""
    assert endpoints == Endpoints(
        urls=("http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"),
        picker="prefix-affinity",
        metrics=EndpointMetrics(format="sglang", path="/metrics", interval=0.5),
        max_queue=8,
        prefix_chars=2048,
    )
    assert config_from_dict(config_to_dict(config)) == config
    assert "baseURL" not in config_to_dict(config)["pools"][0]


@pytest.mark.parametrize(
    ("endpoints", "extra", "fragment"),
    [
        ({"urls": ["http://a/v1"]}, {"baseURL": "http://b/v1"}, "pools[0].baseURL: cannot be combined with endpoints"),
        ({"urls": ["ftp://a"]}, {}, "pools[0].endpoints.urls[0]: must start with http"),
        ({"urls": [], "metrics": {}}, {}, "pools[0].endpoints.metrics.format: is required"),
        ({"urls": [], "picker": "random"}, {}, "pools[0].endpoints.picker: must be one of"),
        ({"urls": [], "maxQueue": 0}, {}, "pools[0].endpoints.maxQueue: must be at least 1"),
    ],
)
def test_endpoint_settings_are_checked(endpoints: dict[str, Any], extra: dict[str, Any], fragment: str) -> None:
    doc = {"version": 1, "pools": [{"name": "p", "provider": "openai", "endpoints": endpoints, **extra}]}
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    assert any(fragment in p for p in info.value.problems), info.value.problems


# -- the compiler and EndpointSlices --------------------------------------------------------------------------------


def compiled(spec: dict[str, Any], *slices: dict[str, Any]) -> tuple[Any, Any]:
    pool_doc = {
        "apiVersion": "tollway.dev/v1alpha1",
        "kind": "ProviderKeyPool",
        "metadata": {"name": "gpu", "namespace": "ml"},
        "spec": {"provider": "openai-compatible", **spec},
    }
    result = compile_crs([pool_doc, *slices])
    status = result.statuses[ObjectRef("ProviderKeyPool", "ml", "gpu")]
    return result, status


def endpoint_slice(
    name: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    address_type: str = "IPv4",
    service: str = "vllm",
    namespace: str = "ml",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubernetes.io/service-name": service}},
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": ports,
    }


SLICES = (
    endpoint_slice(
        "vllm-a",
        [
            {"addresses": ["10.0.0.2", "10.9.9.9"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.1"]},  # no conditions: unknown counts as ready
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "terminating": True}},
        ],
        [{"name": "http", "port": 8000, "protocol": "TCP"}, {"name": "metrics", "port": 9000}],
    ),
    endpoint_slice("vllm-b", [{"addresses": ["fd00::5"]}], [{"name": "http", "port": 8000}], address_type="IPv6"),
    endpoint_slice("other", [{"addresses": ["10.1.1.1"]}], [{"name": "http", "port": 8000}], service="other"),
    endpoint_slice("elsewhere", [{"addresses": ["10.2.2.2"]}], [{"name": "http", "port": 8000}], namespace="x"),
)


def test_a_services_ready_endpoints_become_the_pools_urls() -> None:
    spec = {"endpoints": {"service": {"name": "vllm", "port": "http"}, "picker": "least-load"}}
    result, status = compiled(spec, *SLICES)
    [gpu] = result.config.pools
    assert gpu.endpoints is not None and gpu.base_url == ""
    assert gpu.endpoints.urls == ("http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://[fd00::5]:8000/v1")
    assert status.extra["endpointCount"] == 3 and not status.unresolved and not status.invalid
    assert result.services == frozenset({("ml", "vllm")})
    # By the pod port's number, with another scheme and path.
    spec = {"endpoints": {"service": {"name": "vllm", "port": 9000, "scheme": "https", "path": "/api/v1/"}}}
    result, _ = compiled(spec, *SLICES[:1])
    assert result.config.pools[0].endpoints.urls == ("https://10.0.0.1:9000/api/v1", "https://10.0.0.2:9000/api/v1")


def test_fqdn_slices_and_a_single_port_need_no_port_name() -> None:
    fqdn = endpoint_slice("v", [{"addresses": ["localhost"]}], [{"port": 41234}], address_type="FQDN")
    result, _ = compiled({"endpoints": {"service": {"name": "vllm"}}}, fqdn)
    assert result.config.pools[0].endpoints.urls == ("http://localhost:41234/v1",)


@pytest.mark.parametrize(
    ("spec", "slices", "where", "fragment"),
    [
        ({"service": {"name": "nope"}}, SLICES, "unresolved", "service 'nope' has no EndpointSlices"),
        ({"service": {"name": "vllm", "port": "grpc"}}, SLICES, "unresolved", "no port 'grpc'"),
        ({"service": {"name": "vllm"}}, SLICES[:1], "unresolved", "the Service has several: name one"),
        (
            {"service": {"name": "vllm"}},
            [endpoint_slice("empty", [], [])],
            "warnings",
            "service 'vllm' has no ready endpoints",
        ),
        ({"urls": ["http://a/v1"], "service": {"name": "vllm"}}, (), "invalid", "exactly one of service or urls"),
        ({"urls": ["http://a/v1"], "metrics": {"interval": "1s"}}, (), "invalid", "metrics.format: is required"),
    ],
)
def test_endpoint_problems_are_reported(spec: dict[str, Any], slices: Any, where: str, fragment: str) -> None:
    result, status = compiled({"endpoints": spec}, *slices)
    assert any(fragment in p for p in getattr(status, where)), (status.invalid, status.unresolved, status.warnings)
    if where != "invalid":  # a pool waiting for its endpoints is still in the config: the fallbacks serve
        assert result.config.pools[0].endpoints.urls == ()


def test_base_url_and_endpoints_do_not_mix() -> None:
    result, status = compiled({"baseURL": "http://x/v1", "endpoints": {"urls": ["http://a/v1"]}})
    assert not result.config.pools
    assert any("cannot be combined with spec.endpoints" in p for p in status.invalid)


def test_static_urls_and_settings_compile() -> None:
    spec = {
        "endpoints": {
            "urls": ["http://10.0.0.5:8000/v1/"],
            "picker": "round-robin",
            "metrics": {"format": "sglang", "path": "/m", "interval": "250ms"},
            "maxQueue": 4,
            "prefixChars": 512,
            "cooldown": "3s",
        }
    }
    result, status = compiled(spec)
    assert result.config.pools[0].endpoints == Endpoints(
        urls=("http://10.0.0.5:8000/v1",),
        picker="round-robin",
        metrics=EndpointMetrics(format="sglang", path="/m", interval=0.25),
        max_queue=4,
        prefix_chars=512,
        cooldown=3.0,
    )
    assert status.extra["endpointCount"] == 1


def test_the_operator_keeps_only_what_matters_of_a_slice() -> None:
    body = {
        **SLICES[0],
        "metadata": {**SLICES[0]["metadata"], "uid": "u1", "resourceVersion": "1", "generation": 1},
        "endpoints": [{**e, "zone": "a", "hints": {"forZones": [{"name": "a"}]}} for e in SLICES[0]["endpoints"]],
    }
    moved = {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}
    moved["endpoints"] = [{**e, "zone": "b", "nodeName": "n2"} for e in SLICES[0]["endpoints"]]
    assert relevant_state("EndpointSlice", body) == relevant_state("EndpointSlice", moved)
    unready = {**body, "endpoints": [{"addresses": ["10.0.0.2"], "conditions": {"ready": False}}]}
    assert relevant_state("EndpointSlice", body) != relevant_state("EndpointSlice", unready)
    assert "zone" not in orjson.dumps(slice_document(body)).decode()
    # The compact document compiles to the same pool as the full one.
    spec = {"endpoints": {"service": {"name": "vllm", "port": "http"}}}
    assert compiled(spec, slice_document(body))[0].config.pools == compiled(spec, body)[0].config.pools


def test_slices_of_services_no_pool_names_do_not_wake_the_render_loop() -> None:
    controller = Controller(OperatorOptions(namespaces=("ml",)), client=None)  # type: ignore[arg-type]
    controller._services = {("ml", "vllm")}  # as the last compile left it
    meta = {"namespace": "ml", "uid": "u2", "labels": {"kubernetes.io/service-name": "unrelated"}}
    controller.observe("EndpointSlice", "ADDED", {**SLICES[2], "metadata": {**meta, "name": "other"}})
    assert not controller._dirty.is_set()
    assert any(d["kind"] == "EndpointSlice" for d in controller.documents())  # kept, should a pool name it later
    meta = {**meta, "uid": "u3", "labels": {"kubernetes.io/service-name": "vllm"}}
    controller.observe("EndpointSlice", "ADDED", {**SLICES[0], "metadata": {**meta, "name": "vllm-a"}})
    assert controller._dirty.is_set()


# -- metric parsers -------------------------------------------------------------------------------------------------

VLLM_PAGE = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="deepseek r1 {fp8}"} 3.0
vllm:num_requests_running{engine="1",model_name="deepseek r1 {fp8}"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a \\"quoted\\" } name"} 4.0 1712345678000
vllm:num_requests_waiting{engine="1",model_name="x"} NaN
vllm:num_requests_waiting_by_reason{reason="capacity"} 99.0
vllm:kv_cache_usage_perc{engine="0",model_name="x"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="x"} 0.75
vllm:gpu_cache_usage_perc{engine="0",model_name="x"} 0.01
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="x"} 7.0
"""


def test_vllm_figures_sum_engines_and_take_the_fullest_cache() -> None:
    assert parse_load("vllm", VLLM_PAGE) == Load(waiting=4.0, running=5.0, kv_cache=0.75)


def test_the_removed_vllm_cache_name_is_read_only_when_the_current_one_is_absent() -> None:
    legacy = b'vllm:num_requests_waiting 1\nvllm:num_requests_running 2\nvllm:gpu_cache_usage_perc{e="0"} 0.5\n'
    assert parse_load("vllm", legacy) == Load(1.0, 2.0, 0.5)
    assert parse_load("vllm", b"vllm:num_requests_waiting 1\r\nvllm:num_requests_running 2\r\n").kv_cache == 0.0


def test_sglang_names_and_an_incomplete_page() -> None:
    page = (
        b'sglang:num_queue_reqs{model_name="m"} 7\nsglang:num_running_reqs{model_name="m"} 9\nsglang:token_usage 0.4\n'
    )
    assert parse_load("sglang", page) == Load(7.0, 9.0, 0.4)
    with pytest.raises(ExpositionError, match="sglang:num_running_reqs"):
        parse_load("sglang", b"sglang:num_queue_reqs 1\n")
    with pytest.raises(ExpositionError):
        parse_load("vllm", page)  # the wrong format reads as no figures, never as an idle server


@pytest.mark.parametrize("format", ["vllm", "sglang"])
def test_the_mock_reports_what_the_parser_reads(format: str) -> None:
    page = render(format, "mock-gpt", Report(waiting=2, running=6, kv_cache_usage=0.5)).encode()
    assert parse_load(format, page) == Load(2.0, 6.0, 0.5)


def test_addresses_and_metrics_urls() -> None:
    assert address_of("http://10.0.0.5:8000/v1") == "10.0.0.5:8000"
    assert address_of("https://vllm.ml.svc/v1") == "vllm.ml.svc:443"
    assert address_of("http://[fd00::5]:8000/v1") == "[fd00::5]:8000"
    assert metrics_url("http://[fd00::5]:8000/v1", "/metrics") == "http://[fd00::5]:8000/metrics"


# -- the prefix key -------------------------------------------------------------------------------------------------

SYSTEM = "You are the support assistant of Acme. " * 40  # 1,560 characters


def test_a_shared_system_prompt_longer_than_prefix_chars_is_one_key() -> None:
    one = chat(("system", SYSTEM), ("user", "Where is my parcel?"))
    two = chat(("system", SYSTEM), ("user", "Cancel my order, please."), ("assistant", "Done."), ("user", "Thanks"))
    assert prefix_key(one, 1024) == prefix_key(two, 1024)
    assert len(leading_text(one, 1024)) == 1024
    other = chat(("system", SYSTEM.replace("Acme", "Bolt")), ("user", "Where is my parcel?"))
    assert prefix_key(one, 1024) != prefix_key(other, 1024)


def test_only_whole_blocks_count_so_a_conversation_keeps_its_key() -> None:
    first_turn = chat(("system", "Be brief."), ("user", "x" * 300))
    later_turn = chat(("system", "Be brief."), ("user", "x" * 300), ("assistant", "ok"), ("user", "and more?"))
    assert len(leading_text(first_turn, 1024)) < 2 * BLOCK_CHARS
    assert prefix_key(first_turn, 1024) == prefix_key(later_turn, 1024)
    # Shorter than one block: the whole text is the key.
    assert prefix_key(chat(("user", "hi")), 1024) != prefix_key(chat(("user", "ho")), 1024)


def test_legacy_completions_use_their_prompt() -> None:
    body = {"model": "m", "prompt": "p" * 600}
    call = make_call(COMPLETIONS, body, orjson.dumps(body))
    assert leading_text(call, 1024) == "p" * 600


# -- pickers --------------------------------------------------------------------------------------------------------


def test_least_load_is_queue_then_cache_then_running() -> None:
    def pick(*estimates: tuple[float, float, float]) -> int:
        return pickers.least_load([(i, Estimate(*e)) for i, e in enumerate(estimates)], start=0)

    assert pick((2, 0.1, 0), (1, 0.9, 30)) == 1  # a shorter queue beats an emptier cache
    assert pick((0, 0.50, 1), (0, 0.30, 9)) == 1  # then the cache
    assert pick((0, 0.31, 9), (0, 0.34, 2)) == 1  # within one 5% step, the running count decides
    # Ties rotate with the start.
    assert {pickers.least_load([(i, Estimate(0, 0, 0)) for i in range(3)], start=s) for s in range(3)} == {0, 1, 2}


def test_requests_since_the_last_scrape_move_the_estimate() -> None:
    runtime = pool()
    endpoints = runtime.endpoints
    assert endpoints is not None
    a, b, c, d = scraped(runtime, a=(0, 2, 0.1), b=(0, 2, 0.1), c=(0, 2, 0.1), d=(0, 2, 0.1))
    seen = []
    for _ in range(8):  # a burst between two scrapes spreads evenly instead of piling onto one server
        picked = endpoints.pick(chat(("user", "hi")), now=NOW)
        assert isinstance(picked, Member)
        picked.state.in_flight += 1
        seen.append(host(picked))
    assert sorted(seen) == ["a", "a", "b", "b", "c", "c", "d", "d"]
    # Free slots at the scrape: the new requests run, and KV use grows by the server's own use per request.
    assert a.state.estimate() == Estimate(queue=0, kv_cache=pytest.approx(0.2), running=4)
    # Finished since the scrape: they leave the running count (and the KV use).
    a.state.record_scrape(Load(0, 2, 0.1), NOW)
    a.state.in_flight -= 2
    assert a.state.estimate() == Estimate(queue=0, kv_cache=0.0, running=0)
    # Queueing at the scrape: the server is full, the new requests queue.
    b.state.record_scrape(Load(3, 8, 0.9), NOW)
    b.state.in_flight += 2
    assert b.state.estimate() == Estimate(queue=5, kv_cache=0.9, running=8)
    # An idle server grows by the pool's average KV use per running request.
    c.state.record_scrape(Load(0, 0, 0.0), NOW)
    d.state.record_scrape(Load(0, 4, 0.4), NOW)
    c.state.in_flight += 3
    assert c.state.estimate(0.1) == Estimate(queue=0, kv_cache=pytest.approx(0.3), running=3)
    assert endpoints.estimate(c.state).kv_cache == pytest.approx(3 * (0.1 + 0.9 + 0.4) / (2 + 8 + 4))


def test_picks_follow_the_metrics() -> None:
    runtime = pool()
    scraped(runtime, a=(3, 8, 0.2), b=(0, 8, 0.9), c=(0, 2, 0.3), d=(0, 8, 0.3))
    assert runtime.endpoints is not None
    assert host(runtime.endpoints.pick(chat(("user", "hi")), now=NOW)) == "c"


def test_stale_failing_and_tried_endpoints_are_skipped() -> None:
    runtime = pool()
    endpoints = runtime.endpoints
    assert endpoints is not None
    a, b, c, d = scraped(runtime, b=(0, 9, 0), c=(0, 9, 0), d=(0, 9, 0))
    call = chat(("user", "hi"))
    assert host(endpoints.pick(call, now=NOW)) == "a"
    a.state.scraped_at = NOW - 3.5  # no scrape for more than 3 intervals
    assert host(endpoints.pick(call, now=NOW)) != "a"
    endpoints.bench(b, now=NOW)  # a failed request: the cooldown (10s by default)
    assert host(endpoints.pick(call, now=NOW + 1)) not in ("a", "b")
    assert host(endpoints.pick(call, [c], now=NOW + 1)) == "d"
    assert endpoints.pick(call, [c, d], now=NOW + 1) == Refusal("no-endpoint", 9.0)
    b.state.record_scrape(Load(0, 0, 0), NOW + 11)
    assert host(endpoints.pick(call, [c, d], now=NOW + 11)) == "b"  # back after the cooldown


def test_a_new_endpoint_is_usable_until_its_first_scrape_is_overdue() -> None:
    runtime = pool(urls=URLS[:1])
    assert runtime.endpoints is not None
    [member] = runtime.endpoints.members
    member.state.first_seen = NOW
    assert isinstance(runtime.endpoints.pick(chat(("user", "hi")), now=NOW + 2.9), Member)
    assert runtime.endpoints.pick(chat(("user", "hi")), now=NOW + 3.1) == Refusal("no-endpoint", 1.0)
    # Without metrics nothing goes stale: the load is this process's in-flight count.
    unscraped = pool(urls=URLS[:1], metrics=None)
    assert isinstance(unscraped.endpoints.pick(chat(("user", "hi")), now=NOW + 1e6), Member)  # type: ignore[union-attr]


def test_every_endpoint_at_max_queue_is_saturation() -> None:
    runtime = pool(max_queue=4)
    endpoints = runtime.endpoints
    assert endpoints is not None
    scraped(runtime, a=(4, 8, 0.9), b=(5, 8, 0.9), c=(4, 8, 0.9), d=(3, 8, 0.9))
    call = chat(("user", "hi"))
    picked = endpoints.pick(call, now=NOW)
    assert host(picked) == "d"
    assert isinstance(picked, Member)
    picked.state.in_flight += 1  # d's queue is now 4 too
    assert endpoints.pick(call, now=NOW) == Refusal("saturated", 1.0)


def test_round_robin_takes_turns_and_skips_full_endpoints() -> None:
    runtime = pool(picker="round-robin", max_queue=2)
    assert runtime.endpoints is not None
    scraped(runtime, c=(2, 0, 0))
    seen = [host(runtime.endpoints.pick(chat(("user", "hi")), now=NOW)) for _ in range(6)]
    assert seen == ["a", "b", "d", "d", "a", "b"]


def test_prefix_affinity_keeps_a_prefix_on_one_endpoint_until_it_is_overloaded() -> None:
    runtime = pool(picker="prefix-affinity")
    endpoints = runtime.endpoints
    assert endpoints is not None
    members = scraped(runtime)
    calls = [chat(("system", SYSTEM), ("user", f"question {i}")) for i in range(3)]
    first = endpoints.pick(calls[0], now=NOW)
    assert isinstance(first, Member)
    assert all(endpoints.pick(c, now=NOW) is first for c in calls)
    # Over the bound (1.25 x the average, this request included), the ring's next endpoint takes the prefix.
    first.state.record_scrape(Load(0, 10, 0.5), NOW)
    for member in members:
        if member is not first:
            member.state.record_scrape(Load(0, 4, 0.5), NOW)
    spill = endpoints.pick(calls[0], now=NOW)
    assert isinstance(spill, Member) and spill is not first
    assert endpoints.pick(calls[1], now=NOW) is spill  # the whole prefix moves together
    # Different system prompts spread over the endpoints.
    scraped(runtime)
    spread = {endpoints.pick(chat(("system", f"{i} {SYSTEM}"), ("user", "q")), now=NOW) for i in range(40)}
    assert len(spread) == len(URLS)


def test_removing_an_endpoint_moves_only_its_own_keys() -> None:
    ring4 = pickers.Ring(URLS)
    ring3 = pickers.Ring(URLS[:3])
    keys = [prefix_key(chat(("system", f"{i} {SYSTEM}")), 1024) for i in range(400)]
    owners4 = [next(ring4.walk(k)) for k in keys]
    owners3 = [next(ring3.walk(k)) for k in keys]
    moved = [(a, b) for a, b in zip(owners4, owners3, strict=True) if a != b]
    assert moved and all(a == 3 for a, _ in moved)  # only the keys endpoint 3 owned
    assert 0.1 < owners4.count(3) / len(keys) < 0.4  # and it owned about a quarter


def test_yaml_example_compiles() -> None:
    """examples/self-hosted/ is a valid CR set: it compiles without problems other than the missing slices."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "examples" / "self-hosted"
    docs = [d for f in sorted(root.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    result = compile_crs(docs)
    assert not [s for s in result.statuses.values() if s.invalid]
    pools = {p.name: p for p in result.config.pools}
    assert any(p.endpoints is not None for p in pools.values())


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("openai-compatible", "http://10.0.0.2:8000/v1/chat/completions"),
        ("anthropic", "http://10.0.0.2:8000/v1/messages"),
        ("gemini", "http://10.0.0.2:8000/v1/models/m:generateContent"),
        ("azure-openai", "http://10.0.0.2:8000/v1/openai/deployments/m/chat/completions?api-version=2024-10-21"),
    ],
)
def test_every_translator_builds_the_picked_endpoints_url(provider: str, expected: str) -> None:
    from tollway_dataplane.providers import translator_for

    config = Pool(
        name="ns/gpu",
        provider=provider,
        base_url="",
        azure_api_version="2024-10-21" if provider == "azure-openai" else None,
        endpoints=Endpoints(urls=URLS[:2]),
    )
    runtime = PoolRuntime(config, {}, KeyStateRegistry())
    assert runtime.endpoints is not None
    member = runtime.endpoints.members[1]
    assert member.target.config.base_url == URLS[1] and member.target.name == runtime.name
    assert runtime.config.base_url == ""  # the pool itself is untouched
    translator = translator_for(provider)
    assert translator is not None
    assert translator.build_request(chat(("user", "hi")), member.target, None, "m").url == expected
