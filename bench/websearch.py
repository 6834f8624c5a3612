#!/usr/bin/env python3
"""What web-search grounding adds to a request, over mock engines: a separate, small measurement.

    .venv/bin/python bench/websearch.py [--requests N]     # also run at the end of `make bench`

One `tollway run --crs` process pinned to the gateway core serves three models on one mock LLM: `plain` (no
search), `grounded` (SearXNG and Tavily, asked with `web_search_options`) and `rewritten` (the same, plus the
rewrite model's call). The mock LLM and both engines run in this process on the load core and answer at once,
so the difference between the rows is what the stage costs: deciding, the engine round trips, merging,
rendering the system message and the citations filter (the mock's answer cites [1] and [2]). Requests go one
at a time; the figures are medians and 99th percentiles of the whole request as the client sees it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
GATEWAY_CORE = 1
KEY = "sk-bench-search"
ANSWER = "The final ended 2-1 [1], after extra time [2]."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _engines_app() -> web.Application:
    hits = [(f"Result {i}", f"https://news.example/{i}", f"Snippet number {i} about the final.") for i in range(10)]

    async def searxng(request: web.Request) -> web.Response:
        return web.json_response({"results": [{"title": t, "url": u, "content": s} for t, u, s in hits]})

    async def tavily(request: web.Request) -> web.Response:
        body = await request.json()
        results = [{"title": t, "url": u.replace("news", "wire"), "content": s} for t, u, s in hits]
        return web.json_response({"query": body["query"], "results": results[: body["max_results"]]})

    app = web.Application()
    app.router.add_get("/searxng/search", searxng)
    app.router.add_post("/tavily/search", tavily)
    return app


def _crs(llm: str, engines: str) -> str:
    search = {
        "engines": [
            {"type": "searxng", "url": f"{engines}/searxng"},
            {"type": "tavily", "url": f"{engines}/tavily", "credentials": {"secretRef": {"name": "tavily"}}},
        ]
    }
    rewritten = {**search, "rewrite": {"pool": "llm", "model": "rewriter"}, "enabled": "always"}
    return textwrap.dedent(
        f"""
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: llm, namespace: default}}
        spec: {{provider: openai-compatible, baseURL: "{llm}/v1", keys: [{{secretRef: {{name: keys, key: llm}}}}]}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: keys, namespace: default}}
        stringData: {{llm: sk-upstream, caller: {KEY}}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: tavily, namespace: default}}
        stringData: {{apiKey: tvly-bench}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {{name: bench, namespace: default}}
        spec: {{credentials: [{{secretRef: {{name: keys, key: caller}}}}]}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: search, namespace: default}}
        spec:
          rules:
            - {{models: [plain], backends: [{{pool: llm, model: mock-gpt}}]}}
            - {{models: [grounded], backends: [{{pool: llm, model: mock-gpt}}], webSearch: {json.dumps(search)}}}
            - {{models: [rewritten], backends: [{{pool: llm, model: mock-gpt}}], webSearch: {json.dumps(rewritten)}}}
        """
    )


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(requests: int, core: int | None) -> dict[str, Any]:
    import tollway_mock

    llm_runner, llm = await _serve(tollway_mock.create_app())
    engines_runner, engines = await _serve(_engines_app())
    tmp = Path(tempfile.mkdtemp(prefix="tollway-bench-search-"))
    (tmp / "crs.yaml").write_text(_crs(llm, engines))
    port = _free_port()
    cmd = [sys.executable, "-m", "tollway_cli", "run", "--crs", str(tmp), "--port", str(port), "--metrics-port", "0"]
    cmd += ["--drain-delay", "0", "--no-access-log"]
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("dataplane", "operator", "cli"))}
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{url}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the gateway did not become ready")
            script = [
                {"match": {"model": "rewriter"}, "times": 0, "behaviour": {"content": '{"queries": ["final score"]}'}},
                {"match": {"model": "mock-gpt"}, "times": 0, "behaviour": {"content": ANSWER}},
            ]
            for rule in script:
                await session.post(f"{llm}/__mock/script", json=rule)
            rows: dict[str, dict[str, float]] = {}
            for model in ("plain", "grounded", "rewritten"):
                body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Who won the final?"}]}
                if model == "grounded":
                    body["web_search_options"] = {}
                times = []
                for i in range(requests + 50):  # the first 50 warm connections and caches up
                    started = time.perf_counter()
                    async with session.post(
                        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
                    ) as r:
                        data = await r.json()
                        assert r.status == 200, data
                    if i >= 50:
                        times.append((time.perf_counter() - started) * 1000)
                if model != "plain":
                    assert data["choices"][0]["message"].get("annotations"), "the answer was not grounded"
                rows[model] = {"p50_ms": statistics.median(times), "p99_ms": _percentile(times, 0.99)}
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        await llm_runner.cleanup()
        await engines_runner.cleanup()
    plain = rows["plain"]
    for name in ("grounded", "rewritten"):
        rows[name]["added_p50_ms"] = rows[name]["p50_ms"] - plain["p50_ms"]
        rows[name]["added_p99_ms"] = rows[name]["p99_ms"] - plain["p99_ms"]
    return {
        "requests": requests,
        "gateway_core": core,
        "rows": {k: {m: round(v, 3) for m, v in r.items()} for k, r in rows.items()},
    }


def measure(requests: int = 1000, core: int | None = GATEWAY_CORE) -> dict[str, Any]:
    if core is not None and (os.cpu_count() or 1) < 2:
        core = None
    return asyncio.run(_measure(requests, core))


def report(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [f"web search over mock engines ({result['requests']} sequential requests per row):"]
    for name, label in (("plain", "no search"), ("grounded", "SearXNG + Tavily"), ("rewritten", "+ rewrite call")):
        r = rows[name]
        added = f", added p50 {r['added_p50_ms']:.2f} / p99 {r['added_p99_ms']:.2f} ms" if "added_p50_ms" in r else ""
        lines.append(f"  {label:18} p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms{added}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})  # the mocks and the client; the gateway gets core 1
    result = measure(args.requests)
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
