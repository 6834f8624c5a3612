#!/usr/bin/env python3
"""What guardrails cost, measured on their own: the latency a rules-only guardrail adds to a non-streamed request,
and the time to first token the stream window adds.

    .venv/bin/python bench/guardrails.py [--quick]     # alone; `make bench` runs it after the side-by-side table

One Tollway process (pinned to core 1) serves the same mock upstream (core 0) through routes that differ only in
their guardrails: `plain` (none), `guarded` (rules only: the endless-reasoning patterns on prompts and PII masks
on prompts and answers) and `windowed-64` / `windowed-256` (a PII mask on streamed answers with that window).
Requests alternate between the routes so drift hits both alike; the figures are differences of medians.
Self-contained on purpose (its own processes and client), so the side-by-side harness can be split freely.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
TOLLWAY = REPO / ".venv" / "bin" / "tollway"
GATEWAY_CORE, LOAD_CORE = 1, 0
API_KEY = "sk-guardrail-bench"
PROMPT = (
    "You are helping me plan a small garden. I have a sunny corner of about four square metres and would like "
    "herbs that grow well together. What should I plant, and how far apart?"
)
STREAM_PIECE, STREAM_CHUNKS, CHUNK_DELAY_MS = "word", 120, 5  # 5 characters per chunk, 1,000 characters a second


def crs(upstream: int) -> str:
    pii = "{name: pii, type: rules, action: mask, detectors: [email, phone, credit-card, cn-id-card, api-key]}"
    route = "---\napiVersion: tollway.dev/v1alpha1\nkind: AIRoute\nmetadata: {{name: {name}, namespace: default}}\n"
    route += "spec:\n  rules: [{{models: [{name}], backends: [{{pool: mock, model: mock-gpt}}]}}]\n"
    endless = (
        '{name: endless, type: rules, direction: request, patterns: ["树中两条路径之间的距离", '
        '"distance between two paths in a tree", "(?i)ignore (all )?previous instructions"]}'
    )
    routes = "".join(
        route.format(name=name) + guardrails
        for name, guardrails in (
            ("plain", ""),
            ("guarded", f"  guardrails:\n    checkers: [{endless}, {pii}]\n"),
            ("windowed-64", f"  guardrails:\n    stream: {{window: 64}}\n    checkers: [{pii}]\n"),
            ("windowed-256", f"  guardrails:\n    stream: {{window: 256}}\n    checkers: [{pii}]\n"),
        )
    )
    return (
        textwrap.dedent(
            f"""
            apiVersion: v1
            kind: Secret
            metadata: {{name: keys, namespace: default}}
            stringData: {{bench: {API_KEY}, upstream: mock-key}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: bench, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: keys, key: bench}}}}]}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: mock, namespace: default}}
            spec:
              provider: openai-compatible
              baseURL: http://127.0.0.1:{upstream}/v1
              keys: [{{secretRef: {{name: keys, key: upstream}}}}]
            """
        )
        + routes
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], core: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(core), *cmd], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def wait_ready(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def latency(session: aiohttp.ClientSession, url: str, routes: list[str], count: int) -> dict[str, list[float]]:
    """Non-streamed requests at concurrency 1, alternating between the routes; milliseconds."""
    out: dict[str, list[float]] = {r: [] for r in routes}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    messages = [{"role": "user", "content": PROMPT}]
    bodies = {r: orjson.dumps({"model": r, "messages": messages, "max_tokens": 64}) for r in routes}
    for i in range(count * len(routes)):
        route = routes[i % len(routes)]
        started = time.perf_counter()
        async with session.post(url, data=bodies[route], headers=headers) as response:
            await response.read()
            assert response.status == 200, response.status
        out[route].append((time.perf_counter() - started) * 1000)
    return out


async def ttft(session: aiohttp.ClientSession, url: str, routes: list[str], count: int) -> dict[str, list[float]]:
    """Streams of STREAM_CHUNKS chunks, one every CHUNK_DELAY_MS; milliseconds to the first text the caller gets."""
    out: dict[str, list[float]] = {r: [] for r in routes}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    content = " ".join([STREAM_PIECE] * STREAM_CHUNKS)
    for i in range(count * len(routes)):
        route = routes[i % len(routes)]
        body = {
            "model": route,
            "stream": True,
            "messages": [{"role": "user", "content": PROMPT}],
            "mock": {"content": content, "chunk_delay_ms": CHUNK_DELAY_MS},
        }
        started = time.perf_counter()
        first = None
        async with session.post(url, json=body, headers=headers) as response:
            async for line in response.content:
                text = line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line
                if first is None and text:
                    first = (time.perf_counter() - started) * 1000
        assert first is not None, route
        out[route].append(first)
    return out


async def measure(tmp: Path, quick: bool) -> dict[str, Any]:
    upstream_port, port, metrics_port = free_port(), free_port(), free_port()
    (tmp / "guardrail-crs").mkdir(exist_ok=True)
    (tmp / "guardrail-crs" / "bench.yaml").write_text(crs(upstream_port))
    mock_cmd = [str(TOLLWAY), "mock", "--host", "127.0.0.1", "--port", str(upstream_port)]
    mock = start(mock_cmd, LOAD_CORE, tmp / "mock.log")
    gateway = start(
        [
            str(TOLLWAY), "run", "--crs", str(tmp / "guardrail-crs"), "--host", "127.0.0.1", "--port", str(port),
            "--metrics-port", str(metrics_port), "--no-access-log", "--drain-delay", "0", "--grace-period", "1",
        ],
        GATEWAY_CORE,
        tmp / "guardrail-gateway.log",
    )  # fmt: skip
    try:
        await wait_ready(f"http://127.0.0.1:{upstream_port}/v1/models")
        await wait_ready(f"http://127.0.0.1:{port}/readyz")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            await latency(session, url, ["plain", "guarded"], 100)  # warm-up
            requests = await latency(session, url, ["plain", "guarded"], 600 if quick else 3000)
            streams = await ttft(session, url, ["plain", "windowed-64", "windowed-256"], 6 if quick else 20)
    finally:
        stop(gateway)
        stop(mock)
    plain, guarded = requests["plain"], requests["guarded"]
    rate = len(STREAM_PIECE) + 1  # characters per chunk (a space, then the word)
    figures: dict[str, Any] = {
        "requests_per_route": len(plain),
        "plain_ms": {"p50": round(statistics.median(plain), 3), "p99": round(pct(plain, 99), 3)},
        "guarded_ms": {"p50": round(statistics.median(guarded), 3), "p99": round(pct(guarded, 99), 3)},
        "added_p50_ms": round(statistics.median(guarded) - statistics.median(plain), 3),
        "stream": {"chars_per_second": rate * 1000 // CHUNK_DELAY_MS, "streams_per_route": len(streams["plain"])},
    }
    base = statistics.median(streams["plain"])
    for window in (64, 256):
        values = streams[f"windowed-{window}"]
        figures["stream"][f"window_{window}"] = {
            "ttft_p50_ms": round(statistics.median(values), 1),
            "added_ttft_p50_ms": round(statistics.median(values) - base, 1),
            "expected_ms": round(window / rate * CHUNK_DELAY_MS, 1),  # the upstream writing a window's worth
        }
    figures["stream"]["plain_ttft_p50_ms"] = round(base, 1)
    return figures


def report(figures: dict[str, Any]) -> str:
    s = figures["stream"]
    lines = [
        "guardrails (one Tollway on core 1, mock upstream on core 0):",
        f"  rules-only guardrail, non-streamed, concurrency 1, {figures['requests_per_route']} requests per route: "
        f"p50 {figures['plain_ms']['p50']} -> {figures['guarded_ms']['p50']} ms, "
        f"p99 {figures['plain_ms']['p99']} -> {figures['guarded_ms']['p99']} ms: "
        f"added p50 {figures['added_p50_ms']} ms",
        f"  stream window, upstream writing {s['chars_per_second']} characters/s, {s['streams_per_route']} streams per "
        f"route: time to first text p50 {s['plain_ttft_p50_ms']} ms without a window",
    ]
    for window in (64, 256):
        w = s[f"window_{window}"]
        lines.append(
            f"    window {window}: {w['ttft_p50_ms']} ms, added {w['added_ttft_p50_ms']} ms "
            f"(the upstream takes {w['expected_ms']} ms to write {window} characters)"
        )
    return "\n".join(lines)


def run(tmp: Path, quick: bool, echo: bool = True) -> dict[str, Any]:
    figures = asyncio.run(measure(tmp, quick))
    if echo:
        print(report(figures), flush=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory(prefix="tollway-guardrail-bench-") as tmp:
        run(Path(tmp), args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
