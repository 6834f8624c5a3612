#!/usr/bin/env python3
"""Inference-aware balancing, simulated: TTFT and throughput under round-robin, least-load and prefix-affinity.

    .venv/bin/python bench/inference_lb.py            # make bench-lb: about three minutes
    .venv/bin/python bench/inference_lb.py --quick    # about two minutes

Four simulated model servers sit behind one `tollway run` pool with `endpoints`, scraped every second (the
default). Each is the mock LLM's engine: a FIFO queue in front of its slots, one prefill at a time (prefill is
compute-bound), a prefix cache of 96 blocks of 256 characters, KV-cache use out of 16,000 tokens, vLLM metrics.
Three are current machines (8 slots, 0.25 ms per uncached prompt token, 20 ms per output token) and one is an
older one (4 slots, 0.5 ms, 30 ms), as a fleet bought over two years is. Each picker gets fresh servers (cold
caches) and a fresh gateway, and the same two phases:

* bursty: an open-loop Poisson process alternating 5 s at 5 requests/s and 2.5 s at 24 requests/s (22.5 s; 15 s
  with --quick). TTFT p50/p90/p99 come from here: request sent to the first streamed event, at the client.
* saturation: 56 clients (twice the servers' slots), each sending its next request as soon as the last one is
  answered, for half as long. Throughput (answered requests and output tokens per second) comes from here.

Both replay one seeded workload: 8 applications, each with its own system prompt of 3,000 to 7,000 characters
(about 750 to 1,750 tokens), picked with Zipf-like popularity (the first 8 times as often as the last); a user
message of 100 to 1,200 characters; 10 to 200 output tokens (log-normal, median 40); every request streamed. The
system prompts together need about twice one server's prefix cache: spread evenly, every server keeps evicting
them; kept apart by prefix, each server holds its share. The figures describe the simulation on this machine,
not a GPU: they show how the pickers differ, not what a real server does.

Prints one table and writes bench/results/inference-lb-<time>.json and a PNG chart next to it (matplotlib from
the bench tools venv, as bench/run.py does). Every child runs in its own process group and is killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
sys.path[:0] = [str(REPO / d) for d in ("dataplane", "operator", "cli")] + [str(BENCH)]

PICKERS = ("round-robin", "least-load", "prefix-affinity")
SERVERS = 4
ENGINE = {"slots": 8, "prefill_ms_per_token": 0.25, "decode_ms_per_token": 20.0, "cache_blocks": 96, "kv_tokens": 16000}
OLDER = {"slots": 4, "prefill_ms_per_token": 0.5, "decode_ms_per_token": 30.0}  # the last server's differences
APPS = 8
CALM_RATE, BURST_RATE = 5.0, 24.0  # requests/s: 5 s calm, then 2.5 s of burst
CLIENTS = 56  # the saturation phase: twice the servers' slots, each client sending back to back
MODEL = "DeepSeek-R1"
KEY = "sk-bench-lb"
WORDS = ["policy", "order", "refund", "parcel", "invoice", "warranty", "account", "shipping", "address", "clause"]


@dataclass(frozen=True)
class Request:
    at: float  # seconds after the start of the bursty phase
    app: int
    user: str
    tokens: int


@dataclass
class Outcome:
    ttft: float | None = None
    done: float | None = None
    tokens: int = 0
    status: int = 0


@dataclass
class Run:
    picker: str
    requests: int  # the bursty phase
    errors: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    saturated_requests_per_second: float  # the saturation phase
    saturated_output_tokens_per_second: float
    saturated_ttft_p50_ms: float
    prefix_cache_hit_ratio: float  # prompt tokens the servers' prefix caches held, both phases
    picks: dict[str, int] = field(default_factory=dict)


# -- the workload ---------------------------------------------------------------------------------------------


def system_prompts(rng: random.Random) -> list[str]:
    prompts = []
    for app in range(APPS):
        size = rng.randint(3000, 7000)
        text = f"You are assistant {app} of the Acme group. Rules: "
        while len(text) < size:
            text += " ".join(rng.choice(WORDS) for _ in range(12)) + ". "
        prompts.append(text[:size])
    return prompts


def workload(seconds: float, seed: int = 19) -> list[Request]:
    rng = random.Random(seed)
    weights = [1 / (1 + app) for app in range(APPS)]  # Zipf-like: app 0 is asked 8x as often as app 7
    requests = []
    t = 0.0
    while t < seconds:
        burst = (t % 7.5) >= 5.0
        t += rng.expovariate(BURST_RATE if burst else CALM_RATE)
        if t >= seconds:
            break
        app = rng.choices(range(APPS), weights)[0]
        user = " ".join(f"w{rng.randint(0, 9999)}" for _ in range(rng.randint(20, 240)))
        tokens = max(10, min(200, round(rng.lognormvariate(math.log(40), 0.8))))
        requests.append(Request(t, app, user[: rng.randint(100, 1200)], tokens))
    return requests


# -- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("dataplane", "operator", "cli"))}
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()


def serve_mocks(ports: list[int], engines: list[dict[str, Any]]) -> None:
    """The simulated servers in one process (one event loop): `--serve-mocks P1,P2,... --engine JSON-LIST`."""
    import tollway_mock
    from aiohttp import web

    async def main() -> None:
        runners = []
        for port, engine in zip(ports, engines, strict=True):
            runner = web.AppRunner(
                tollway_mock.create_app(engine=tollway_mock.EngineSettings(**engine)), access_log=None
            )
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
            runners.append(runner)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for runner in runners:
            await runner.cleanup()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def crs(urls: list[str], picker: str) -> str:
    return textwrap.dedent(
        f"""
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: gpus, namespace: bench}}
        spec:
          provider: openai-compatible
          endpoints:
            urls: [{", ".join(urls)}]
            picker: {picker}
            metrics: {{format: vllm}}
          timeouts: {{connect: 2s, firstByte: 300s, idle: 60s}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: r1, namespace: bench}}
        spec:
          rules:
            - models: [{MODEL}]
              backends: [{{pool: gpus}}]
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {{name: bench, namespace: bench}}
        spec: {{credentials: [{{secretRef: {{name: bench-key}}}}]}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: bench-key, namespace: bench}}
        stringData: {{apiKey: {KEY}}}
        """
    )


async def wait_http(session: Any, url: str, what: str) -> None:
    import aiohttp

    for _ in range(400):
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not start ({url})")


# -- one run --------------------------------------------------------------------------------------------------


async def one_request(session: Any, url: str, request: Request, prompt: str, out: Outcome) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": request.tokens,
        "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": request.user}],
        "mock": {"chunks": request.tokens},  # how long the simulated answer is
    }
    sent = time.perf_counter()
    try:
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
            out.status = response.status
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                if out.ttft is None:
                    out.ttft = time.perf_counter() - sent
                if b'"content":"' in line and b'"content":""' not in line:
                    out.tokens += 1
            out.done = time.perf_counter()
    except Exception:  # counted as an error; the run goes on
        out.status = out.status or -1


async def bursty(session: Any, url: str, requests: list[Request], prompts: list[str]) -> list[Outcome]:
    """Open loop: every request at its arrival time, whatever the servers' state."""
    outcomes = [Outcome() for _ in requests]
    start = time.perf_counter()

    async def at(request: Request, out: Outcome) -> None:
        await asyncio.sleep(max(0.0, start + request.at - time.perf_counter()))
        await one_request(session, url, request, prompts[request.app], out)

    await asyncio.gather(*(at(r, o) for r, o in zip(requests, outcomes, strict=True)))
    return outcomes


async def saturated(
    session: Any, url: str, requests: list[Request], prompts: list[str], seconds: float
) -> tuple[list[Outcome], float]:
    """Closed loop: CLIENTS callers, each sending its next request as soon as its last one is answered; only
    answers that finish within `seconds` count."""
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            request = requests[i % len(requests)]
            out = Outcome()
            await one_request(session, url, request, prompts[request.app], out)
            if out.done is None or out.done <= deadline:
                outcomes.append(out)
            i += CLIENTS

    await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    return outcomes, seconds


def engines() -> list[dict[str, Any]]:
    return [ENGINE] * (SERVERS - 1) + [ENGINE | OLDER]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def ms(value: float) -> float:
    return round(value * 1000, 1)


async def run_picker(picker: str, requests: list[Request], prompts: list[str], workdir: Path, seconds: float) -> Run:
    import aiohttp

    children = Children()
    try:
        ports = [free_port() for _ in range(SERVERS)]
        children.start(
            [sys.executable, __file__, "--serve-mocks", ",".join(map(str, ports)), "--engine", json.dumps(engines())],
            workdir / f"{picker}-servers.log",
        )
        servers = [f"http://127.0.0.1:{p}" for p in ports]
        crdir = workdir / picker
        crdir.mkdir()
        (crdir / "crs.yaml").write_text(crs([f"{s}/v1" for s in servers], picker))
        port, metrics_port = free_port(), free_port()
        gateway = [sys.executable, "-m", "tollway_cli", "run", "--crs", str(crdir), "--port", str(port)]
        gateway += ["--metrics-port", str(metrics_port), "--no-access-log"]
        children.start(gateway, workdir / f"{picker}-gateway.log")
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
            for server in servers:
                await wait_http(session, f"{server}/healthz", "a simulated server")
            await wait_http(session, f"http://127.0.0.1:{port}/readyz", "the gateway")
            await asyncio.sleep(1.2)  # the first scrape of every server has landed
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            open_loop = await bursty(session, url, requests, prompts)
            closed_loop, elapsed = await saturated(session, url, requests, prompts, seconds / 2)
            totals = {"prompt_tokens": 0, "cached_prompt_tokens": 0}
            picks = {}
            for server in servers:
                async with session.get(f"{server}/__mock/load") as response:
                    report = await response.json()
                for name in totals:
                    totals[name] += report["totals"][name]
                async with session.get(f"{server}/__mock/requests") as response:
                    picks[server.removeprefix("http://")] = len(await response.json())
    finally:
        children.stop_all()
    ttfts = [o.ttft for o in open_loop if o.status == 200 and o.ttft is not None and o.done is not None]
    busy = [o for o in closed_loop if o.status == 200 and o.done is not None]
    busy_ttfts = [o.ttft for o in busy if o.ttft is not None]
    return Run(
        picker=picker,
        requests=len(requests),
        errors=len(requests) - len(ttfts) + len(closed_loop) - len(busy),
        ttft_p50_ms=ms(statistics.median(ttfts)) if ttfts else float("nan"),
        ttft_p90_ms=ms(percentile(ttfts, 0.90)),
        ttft_p99_ms=ms(percentile(ttfts, 0.99)),
        saturated_requests_per_second=round(len(busy) / elapsed, 2),
        saturated_output_tokens_per_second=round(sum(o.tokens for o in busy) / elapsed, 1),
        saturated_ttft_p50_ms=ms(statistics.median(busy_ttfts)) if busy_ttfts else float("nan"),
        prefix_cache_hit_ratio=round(totals["cached_prompt_tokens"] / max(1, totals["prompt_tokens"]), 3),
        picks=picks,
    )


# -- report ---------------------------------------------------------------------------------------------------


def table(runs: list[Run]) -> str:
    lines = [
        "| picker | TTFT p50 | TTFT p90 | TTFT p99 | throughput at saturation | output tokens/s | prefix-cache hits |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r.picker} | {r.ttft_p50_ms:,.0f} ms | {r.ttft_p90_ms:,.0f} ms | {r.ttft_p99_ms:,.0f} ms "
            f"| {r.saturated_requests_per_second:.1f} req/s | {r.saturated_output_tokens_per_second:,.0f} "
            f"| {r.prefix_cache_hit_ratio:.0%} |"
        )
    errors = sum(r.errors for r in runs)
    if errors:
        lines.append(f"\nWARNING: {errors} requests failed; their figures are left out")
    return "\n".join(lines)


def chart(result: Path) -> Path | None:
    import peers

    try:
        python = peers.tools()
    except peers.InstallError as exc:
        print(f">> no chart: {exc}")
        return None
    png = result.with_suffix(".png")
    done = subprocess.run(
        [str(python), str(BENCH / "inference_lb_chart.py"), str(result), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        print(f">> chart failed: {done.stderr.strip()[-300:]}")
        return None
    return png


async def main(args: argparse.Namespace) -> int:
    seconds = 15.0 if args.quick else 22.5  # whole calm-and-burst cycles of 7.5 s
    requests = workload(seconds)
    prompts = system_prompts(random.Random(7))
    print(
        f">> bursty phase: {len(requests)} requests over {seconds:.0f} s ({len(requests) / seconds:.1f}/s, bursts at "
        f"{BURST_RATE:.0f}/s); saturation phase: {CLIENTS} clients for {seconds / 2:.0f} s; {APPS} system prompts; "
        f"{SERVERS} simulated servers (3 x {ENGINE}, 1 older: {OLDER}); pickers: {', '.join(PICKERS)}",
        flush=True,
    )
    runs = []
    with tempfile.TemporaryDirectory(prefix="tollway-lb-") as tmp:
        for picker in PICKERS:
            started = time.perf_counter()
            run = await run_picker(picker, requests, prompts, Path(tmp), seconds)
            print(
                f">> {picker}: TTFT p50 {run.ttft_p50_ms:.0f} ms, p90 {run.ttft_p90_ms:.0f} ms; saturated "
                f"{run.saturated_requests_per_second:.1f} req/s; cache hits {run.prefix_cache_hit_ratio:.0%} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            runs.append(run)
    print()
    print(table(runs))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    result = RESULTS / f"inference-lb-{stamp}.json"
    document = {
        "timestamp": stamp,
        "mode": "quick" if args.quick else "full",
        "seconds": seconds,
        "requests": len(requests),
        "servers": SERVERS,
        "engines": engines(),
        "apps": APPS,
        "rates": {"calm": CALM_RATE, "burst": BURST_RATE, "saturation_clients": CLIENTS},
        "runs": [asdict(r) for r in runs],
    }
    result.write_text(json.dumps(document, indent=2) + "\n")
    png = None if args.no_chart else chart(result)
    print(f"\nresults: {result.relative_to(REPO)}" + (f", chart: {png.relative_to(REPO)}" if png else ""))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 s of bursty arrivals instead of 22.5 s")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument("--serve-mocks", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve_mocks:
        serve_mocks([int(p) for p in arguments.serve_mocks.split(",")], json.loads(arguments.engine))
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
