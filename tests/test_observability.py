"""Metrics, the access log and cost, from scripted traffic with known usage; and the dashboard's queries."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, read_sse
from fixtures.providers.support import provider_crs
from tollway_dataplane.metrics import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
SECRETS = ("sk-otto-secret", "upstream-obs-key", "sk-leaked-in-prompt-0123456789")


def observed_crs(upstream: str) -> dict[str, str]:
    return {
        "all.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: obs-primary, namespace: obs}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              keys: [{{secretRef: {{name: obs-upstream}}}}]
              pricing: [{{model: "obs-*", input: 1.0, cachedInput: 0.5, output: 2.0}}]
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: obs-backup, namespace: obs}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              pricing: [{{model: "obs-*", input: 1.0, output: 2.0}}]
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: obs-upstream, namespace: obs}}
            stringData: {{k: upstream-obs-key}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: observed, namespace: obs}}
            spec:
              rules:
                - models: [obs-model]
                  backends: [{{pool: obs-primary}}]
                  fallbacks: [{{pool: obs-backup, model: obs-fallback}}]
                  retry: {{attempts: 0}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: otto, namespace: obs}}
            spec: {{credentials: [{{secretRef: {{name: otto-key}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: otto-key, namespace: obs}}
            stringData: {{apiKey: sk-otto-secret}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {{name: obs-limit, namespace: obs}}
            spec:
              limits: [{{requests: 4, window: 1h}}]
        """
    }


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        from tollway_cli.logs import JSONFormatter

        self.records.append(record)
        self.lines.append(JSONFormatter().format(record))


@pytest.fixture
def logs() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def scrape(handle: GatewayHandle) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{handle.running.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_metrics_access_log_and_cost(make_gateway: GatewayFactory, mock_llm: MockLLM, logs: Lines) -> None:
    handle = await make_gateway(observed_crs(mock_llm.url), log_text=True, log_text_limit=200)
    traffic = {"route": "obs/observed", "consumer": "obs/otto"}
    primary = {**traffic, "model": "obs-model", "pool": "obs/obs-primary"}
    backup = {**traffic, "model": "obs-fallback", "pool": "obs/obs-backup"}
    ttft_before = sample("tollway_time_to_first_token_seconds_count", route="obs/observed", model="obs-model")
    usage = {"usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    body = {"model": "obs-model", "messages": [{"role": "user", "content": f"my key is {SECRETS[2]}"}]}

    await mock_llm.script(usage, times=2, model="obs-model")
    async with handle.post(CHAT, body, key="sk-otto-secret") as response:  # non-stream
        assert response.status == 200
    async with handle.post(CHAT, {**body, "stream": True}, key="sk-otto-secret") as response:  # stream
        await read_sse(response)
    await mock_llm.script({"status": 500}, model="obs-model")  # the primary fails and its only key cools down
    await mock_llm.script(usage, times=2, model="obs-fallback")
    for _ in range(2):  # the fallback serves; the second time the benched primary is skipped without a call
        async with handle.post(CHAT, body, key="sk-otto-secret") as response:
            assert response.headers["x-tollway-pool"] == "obs/obs-backup"
    async with handle.post(CHAT, body, key="sk-otto-secret") as response:
        assert response.status == 429  # the fifth request: 4 per hour

    assert sample("tollway_requests_total", **primary, status_class="2xx") == 2
    assert sample("tollway_requests_total", **backup, status_class="2xx") == 2
    assert sample("tollway_requests_total", **traffic, model="obs-model", pool="", status_class="4xx") == 1
    for labels in (primary, backup):
        assert sample("tollway_input_tokens_total", **labels) == 22
        assert sample("tollway_output_tokens_total", **labels) == 14
    # Streams only: one TTFT sample for the one stream.
    ttft = sample("tollway_time_to_first_token_seconds_count", route="obs/observed", model="obs-model")
    assert ttft == ttft_before + 1
    assert sample("tollway_request_duration_seconds_count", route="obs/observed", model="obs-model") == 3
    assert sample("tollway_output_tokens_per_second_count", route="obs/observed", model="obs-fallback") == 2
    fallbacks = {"route": "obs/observed", "from_pool": "obs/obs-primary", "to_pool": "obs/obs-backup"}
    assert sample("tollway_fallbacks_total", **fallbacks) == 2
    assert sample("tollway_upstream_errors_total", pool="obs/obs-primary", key_index="0", reason="500") == 1
    assert sample("tollway_upstream_retries_total", route="obs/observed", pool="obs/obs-backup") == 1
    assert sample("tollway_rate_limited_requests_total", limit="obs/obs-limit", consumer="obs/otto") == 1
    # Cost: 11 input tokens at $1/M and 7 output tokens at $2/M = $25e-6 per request with usage.
    for model in ("obs-model", "obs-fallback"):
        cost = sample("tollway_cost_usd_total", route="obs/observed", model=model, consumer="obs/otto")
        assert cost == pytest.approx(2 * 25e-6)

    text = await scrape(handle)
    assert 'tollway_benched_keys{pool="obs/obs-primary"} 1.0' in text  # the key that answered 500 cools down
    assert 'tollway_config_info{hash="sha256:' in text

    access = [json.loads(line) for line in logs.lines if '"ai_log"' in line]
    access = [a for a in access if a["ai_log"]["route"] == "obs/observed"]
    assert len(access) == 5
    stream_line = next(a for a in access if a["ai_log"]["stream"])
    assert stream_line["ai_log"]["ttft_ms"] > 0 and stream_line["ai_log"]["output_tokens"] == 7
    assert stream_line["ai_log"]["usage_estimated"] is False
    fallback_line = access[2]["ai_log"]
    assert [a["outcome"] for a in fallback_line["fallback_chain"]] == ["500", "ok"]
    assert [a["outcome"] for a in access[3]["ai_log"]["fallback_chain"]] == ["all-keys-benched", "ok"]
    assert fallback_line["served_model"] == "obs-fallback" and fallback_line["cost_usd"] == pytest.approx(25e-6)
    assert "[REDACTED]" in fallback_line["prompt"] and fallback_line["completion"]
    assert access[4]["status"] == 429 and access[4]["ai_log"]["error"]

    everything = "\n".join(logs.lines) + text
    for secret in SECRETS:
        assert secret not in everything
    assert "authorization" not in everything.lower()


NATIVE = {"anthropic": "/v1/messages", "openai": "/v1/responses"}  # a pool answering its own protocol as sent


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", sorted(NATIVE))
async def test_prompt_capture_reads_native_answers(
    make_gateway: GatewayFactory, mock_llm: MockLLM, logs: Lines, provider: str, stream: bool
) -> None:
    """With --log-prompts, an answer the provider gave in the caller's own protocol is logged like any other."""
    handle = await make_gateway(provider_crs(mock_llm.url, provider), log_text=True, log_text_limit=200)
    await mock_llm.script({"content": "the native answer, key sk-leaked-in-answer-0123456789"})
    if provider == "anthropic":
        body: dict[str, Any] = {"model": "mock-gpt", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    else:
        body = {"model": "mock-gpt", "input": "hi"}
    async with handle.post(NATIVE[provider], {**body, "stream": stream}) as response:
        assert response.status == 200, await response.text()
        await response.read()
    (sent,) = await mock_llm.requests()
    assert sent["path"].endswith(NATIVE[provider].removeprefix("/v1"))  # served natively, not translated
    (line,) = [json.loads(x)["ai_log"] for x in logs.lines if '"ai_log"' in x]
    assert line["completion"] == "the native answer, key [REDACTED]"
    assert "hi" in line["prompt"]


def test_consumer_label_guard() -> None:
    from tollway_dataplane.metrics import ConsumerLabel

    capped = ConsumerLabel("cap:2")
    assert [capped(c) for c in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    assert ConsumerLabel("off")("a") == ""
    with pytest.raises(ValueError):
        ConsumerLabel("sometimes")


def test_metric_children_are_looked_up_once_and_count_without_locks() -> None:
    """The lock-free values and the child cache change the cost of an update, not what a scrape shows."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from tollway_dataplane import metrics

    registry = CollectorRegistry()
    counter = Counter("t_things", "Things.", ("route", "kind"), registry=registry)
    latency = Histogram("t_seconds", "Seconds.", ("route",), buckets=(0.1, 1.0), registry=registry)
    child = metrics.child(counter, "r", "a")
    assert metrics.child(counter, "r", "a") is child and metrics.child(counter, "r", "b") is not child
    assert isinstance(child._value, metrics._LoopValue)
    for _ in range(3):
        metrics.child(counter, "r", "a").inc()
    metrics.child(counter, "r", "b").inc(2.5)
    for seconds in (0.05, 0.5, 5.0):
        metrics.child(latency, "r").observe(seconds)
    text = generate_latest(registry).decode()
    assert 't_things_total{kind="a",route="r"} 3.0' in text and 't_things_total{kind="b",route="r"} 2.5' in text
    assert 't_seconds_bucket{le="0.1",route="r"} 1.0' in text and 't_seconds_bucket{le="1.0",route="r"} 2.0' in text
    assert 't_seconds_count{route="r"} 3.0' in text and 't_seconds_sum{route="r"} 5.55' in text


def _exported_names() -> set[str]:
    """Every series name the registry can expose, whether or not a labelled child exists yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def test_dashboard_queries_name_exported_metrics() -> None:
    dashboard = json.loads((ROOT / "helm/tollway/dashboards/tollway.json").read_text())
    exported = _exported_names()
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    assert len(panels) >= 12
    for panel in panels:
        assert panel.get("datasource"), panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\btollway_[a-z_]+", target["expr"]))
            assert used, (panel["title"], target["expr"])
            assert used <= exported, (panel["title"], used - exported)


def test_dashboard_panels_have_unique_ids_and_sit_under_their_row() -> None:
    """Grafana tells panels apart by id (two with one id share links and edits), and a row holds the panels below
    it down to the next row, so the cache panels need a row of their own and no panel may overlap another."""
    panels = json.loads((ROOT / "helm/tollway/dashboards/tollway.json").read_text())["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, panel["title"]
        cells |= area
    cache = [p for p in panels if "tollway_cache_" in json.dumps(p.get("targets"))]
    assert cache and {_row_of(p, panels) for p in cache} == {"Response cache"}


def _row_of(panel: dict, panels: list[dict]) -> str:
    rows = sorted((p["gridPos"]["y"], p["title"]) for p in panels if p["type"] == "row")
    return [title for y, title in rows if y < panel["gridPos"]["y"]][-1]


def test_the_load_balancing_row_shows_the_endpoint_metrics() -> None:
    """Pools with endpoints can be watched: queue and KV-cache use and picks per server, saturation per pool, and
    whether the servers' metrics are fresh (stale servers are skipped)."""
    panels = json.loads((ROOT / "helm/tollway/dashboards/tollway.json").read_text())["panels"]
    row = [p for p in panels if p["type"] != "row" and _row_of(p, panels).startswith("Inference-aware load balancing")]
    used = {name for p in row for t in p["targets"] for name in re.findall(r"\btollway_[a-z_]+", t["expr"])}
    assert used == {
        "tollway_endpoint_queue",
        "tollway_endpoint_running",
        "tollway_endpoint_kv_cache_usage_ratio",
        "tollway_endpoint_picks_total",
        "tollway_endpoint_in_flight",
        "tollway_endpoint_scrape_age_seconds",
        "tollway_endpoint_scrape_errors_total",
        "tollway_endpoint_usable",
        "tollway_pool_saturated_total",
    }
    gauges = [t["expr"] for p in row for t in p["targets"] if "rate(" not in t["expr"]]
    # Every replica scrapes the same servers: what a server reported is taken once, not summed over replicas.
    assert all(e.startswith("max by") for e in gauges if "_queue" in e or "_kv_cache" in e or "_running" in e)


async def test_buffered_access_log_sink_writes_every_line_once_per_turn() -> None:
    import asyncio
    import os
    import select

    from tollway_dataplane.accesslog import BufferedSink

    read_fd, write_fd = os.pipe()
    try:
        sink = BufferedSink(write_fd)
        for i in range(100):
            sink(b'{"n": %d}\n' % i)
        assert select.select([read_fd], [], [], 0)[0] == []  # nothing is written before the loop turns
        await asyncio.sleep(0)
        data = os.read(read_fd, 1 << 16)
        assert [json.loads(line)["n"] for line in data.splitlines()] == list(range(100))
    finally:
        os.close(read_fd)
        os.close(write_fd)
