"""The measurements: wrk and bench/streamload.py runs against a row's endpoints, every figure of a row
(latency at concurrency 1, the throughput steps, TTFT, the concurrent-stream steps), the limiter's Redis client
before and after (decisions, the two gateways in turns) and the separate guardrails and web-search figures."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a directory of scripts, not a package
import guardrails  # the guardrails' own costs, measured apart from the side-by-side rows
import websearch
from harness import (
    BENCH,
    GATEWAY_CORE,
    LOAD_CORE,
    P99_LATENCY_BUDGET_MS,
    PROCS,
    REPO,
    STREAM_BUDGET_MS,
    Plan,
    cpu_seconds,
    http,
    rss_mb,
    say,
    tail,
)
from targets import JSON_MODEL, Endpoint, Target, Testbed, baseline_tree, source_path

CHAT_REQUEST = {
    "model": JSON_MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello! Write one sentence about the sea."},
    ],
    "max_tokens": 64,
}


class Bench(Testbed):
    """The testbed and what is measured on it."""

    def __init__(self, plan: Plan, tmp: Path, quick: bool) -> None:
        super().__init__(tmp)
        self.plan = plan
        self.quick = quick
        self.direct_rows: dict[str, Any] = {}

    # -- measurements ------------------------------------------------------------------------------------------

    def decision_latency(self) -> list[dict[str, Any]]:
        """bench/decisions.py on the gateway core, once per client: the current tree, then the baseline."""
        out = []
        trees: list[tuple[Path, str]] = [(REPO, "current")]
        with contextlib.suppress(Exception):
            tree, commit = baseline_tree(self.tmp)
            trees.append((tree, commit))
        count = "1000" if self.quick else "3000"
        for tree, name in trees:
            python = str(REPO / ".venv" / "bin" / "python")
            cmd = ["taskset", "-c", str(GATEWAY_CORE), python, str(BENCH / "decisions.py"), str(self.redis_port), count]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": source_path(tree)}
            )
            try:
                out.append({"tree": name, **json.loads(proc.stdout.strip().splitlines()[-1])})
            except (IndexError, ValueError):
                out.append({"tree": name, "error": (proc.stderr or proc.stdout)[-400:]})
        return out

    def compare_clients(self, rounds: int) -> dict[str, Any]:
        """redis-py against the hand-written RESP client, in turns (see `in_turns`)."""
        current = self.start_tollway()
        baseline = self.start_tollway_resp()
        return self.in_turns({"redis-py": current, "resp": baseline}, rounds)

    def in_turns(self, targets: dict[str, Target], rounds: int) -> dict[str, Any]:
        """Gateways up at once, measured in turns (A, B, A, B, ...) at 32 connections for 4 s each: on a shared
        machine whose speed drifts by the minute, interleaving spreads the drift over all of them, so the medians
        compare the code, not the moment. Per turn: req/s and the gateway's CPU time per request. Stops them."""
        turns: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        try:
            for t in targets.values():
                assert t.json is not None
                self.wrk(t.json, 32, 2)  # warm-up
            for _ in range(rounds):
                for name, t in targets.items():
                    assert t.json is not None
                    turns[name].append(self.wrk(t.json, 32, 4))
        finally:
            for t in targets.values():
                if t.proc is not None:
                    PROCS.stop(t.proc)

        def median(name: str, key: str) -> float:
            values = sorted(x[key] for x in turns[name] if x.get(key) is not None)
            return values[len(values) // 2] if values else 0.0

        summary = {
            name: {"rps": median(name, "rps"), "cpu_us_per_request": median(name, "cpu_us_per_request")}
            for name in turns
        }
        labels = {name: t.label for name, t in targets.items()}
        return {"labels": labels, "rounds": rounds, "turns": turns, "median": summary}

    def wrk(self, ep: Endpoint, connections: int, seconds: int, limit: int = 0) -> dict[str, Any]:
        script = self.tmp / f"wrk-{connections}-{limit}.lua"
        script.write_text(wrk_script(ep, limit))
        cmd = [self.wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), ep.url]
        cpu0, t0 = cpu_seconds(ep.pid), time.monotonic()
        proc = subprocess.run(
            ["taskset", "-c", str(LOAD_CORE), *cmd], capture_output=True, text=True, timeout=seconds + 30
        )
        wall = time.monotonic() - t0
        cpu = cpu_seconds(ep.pid) - cpu0
        line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-300:]} {proc.stdout[-300:]}")
        r = json.loads(line[8:])
        duration = r["duration_us"] / 1e6
        errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
        return {
            "connections": connections,
            "requests": r["requests"],
            "duration_s": round(duration, 2),
            "rps": round(r["requests"] / duration, 1) if duration else 0.0,
            "p50_ms": r["p50"] / 1000,
            "p90_ms": r["p90"] / 1000,
            "p99_ms": r["p99"] / 1000,
            "p999_ms": r["p999"] / 1000,
            "max_ms": r["max"] / 1000,
            "mean_ms": round(r["mean"] / 1000, 3),
            "errors": errors,
            "error_detail": {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]},
            "cpu_s": round(cpu, 3),
            "cpu_util": round(cpu / wall, 3) if wall else None,
            "cpu_us_per_request": round(cpu / r["requests"] * 1e6, 1) if r["requests"] else None,
        }

    def streamload(self, ep: Endpoint, mode: str, args: list[str], timeout: float, sample_pid: int | None = None):
        cmd = [sys.executable, str(BENCH / "streamload.py"), mode, "--url", ep.url, "--model", ep.model]
        for k, v in ep.headers.items():
            cmd += ["--header", f"{k}: {v}"]
        cmd += args + (["--vary"] if ep.vary else [])
        out_path = self.tmp / "streamload.out"
        err_path = self.tmp / "streamload.err"
        cpu0 = cpu_seconds(ep.pid)
        t0 = time.monotonic()
        peak = 0.0
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                ["taskset", "-c", str(LOAD_CORE), *cmd], stdout=out, stderr=err, start_new_session=True
            )
            PROCS.children.append(("streamload", proc))
            try:
                while proc.poll() is None and time.monotonic() - t0 < timeout:
                    if sample_pid is not None:
                        peak = max(peak, rss_mb(sample_pid))
                    time.sleep(0.1)
            finally:
                PROCS.stop(proc, timeout=2)
        cpu = cpu_seconds(ep.pid) - cpu0
        wall = time.monotonic() - t0
        lines = out_path.read_text().strip().splitlines()
        if not lines:
            raise RuntimeError(f"streamload {mode} gave no result: {tail(err_path)}")
        result = json.loads(lines[-1])
        result["cpu_s"] = round(cpu, 3)
        result["cpu_util"] = round(cpu / wall, 3)
        if sample_pid is not None:
            result["rss_peak_mb"] = peak
        return result

    def check(self, t: Target) -> None:
        """One real request each way before measuring: a gateway that answers errors is not measured."""
        assert t.json is not None
        body = dict(CHAT_REQUEST, model=t.json.model)
        status, data = http(
            t.json.url, json.dumps(body).encode(), {**t.json.headers, "Content-Type": "application/json"}, timeout=30
        )
        if status != 200:
            raise RuntimeError(f"check request answered {status}: {data[:300]!r}")
        reply = json.loads(data)
        if not reply.get("choices", [{}])[0].get("message", {}).get("content"):
            raise RuntimeError(f"check request answered no content: {data[:300]!r}")

    def measure(self, t: Target, row: dict[str, Any]) -> None:
        plan = self.plan
        assert t.json is not None
        self.check(t)
        say(f"[{t.name}] warm-up {plan.warmup_s}s")
        self.wrk(t.json, 8, plan.warmup_s)
        row["rss_idle_mb"] = rss_mb(t.json.pid)

        say(f"[{t.name}] latency at concurrency 1: up to {plan.c1_requests} requests / {plan.c1_max_s}s")
        c1 = self.wrk(t.json, 1, plan.c1_max_s, limit=plan.c1_requests)
        row["latency_c1"] = c1

        say(
            f"[{t.name}] throughput: connection steps {plan.tput_connections}, {plan.tput_s}s each, "
            f"until p99 >= {P99_LATENCY_BUDGET_MS:.0f} ms"
        )
        steps: list[dict[str, Any]] = []
        last_ok: int | None = None
        failed_at: int | None = None
        for c in plan.tput_connections:
            s = self.wrk(t.json, c, plan.tput_s)
            steps.append(s)
            print(
                f"     c={c:<4} {s['rps']:>9.1f} req/s  p50 {s['p50_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
                f"cpu {s['cpu_util']:.2f} core  errors {s['errors']}",
                flush=True,
            )
            if _tput_ok(s):
                last_ok = c
            else:
                failed_at = c
                break
        if plan.refine and last_ok is not None and failed_at is not None and failed_at - last_ok > 1:
            c = (last_ok + failed_at) // 2
            s = self.wrk(t.json, c, plan.tput_s)
            steps.append(s)
            print(f"     c={c:<4} {s['rps']:>9.1f} req/s  p99 {s['p99_ms']:7.2f} ms (refine)", flush=True)
        if not any(s["connections"] == 32 for s in steps):
            s = self.wrk(t.json, 32, plan.tput_s)
            steps.append(s)
            print(f"     c=32   {s['rps']:>9.1f} req/s  p99 {s['p99_ms']:7.2f} ms (for comparison)", flush=True)
        row["throughput_steps"] = steps
        good = [s for s in steps if _tput_ok(s)]
        best = max(good, key=lambda s: s["rps"]) if good else None
        row["max_rps_under_p99_budget"] = (
            {"rps": best["rps"], "connections": best["connections"], "p99_ms": best["p99_ms"]} if best else None
        )
        c32 = next(s for s in steps if s["connections"] == 32)
        row["wrk_c32"] = {k: c32[k] for k in ("rps", "p50_ms", "p99_ms", "errors", "cpu_util")}
        row["cpu_us_per_request"] = c32["cpu_us_per_request"]
        row["rss_after_load_mb"] = rss_mb(t.json.pid)

        if t.stream is None:
            return
        try:
            self.measure_streams(t, row)
        except Exception as exc:
            row["stream_error"] = str(exc)[:400]
            say(f"[{t.name}] streaming failed: {exc}")

    def measure_streams(self, t: Target, row: dict[str, Any]) -> None:
        plan = self.plan
        assert t.stream is not None
        check = self.streamload(t.stream, "ttft", ["--count", "3", "--max-seconds", "20"], 40)
        if check["errors"] or check["ttft_ms"].get("n", 0) < 3:
            raise RuntimeError(f"stream check failed: {check['errors']}")
        self.streamload(t.stream, "ttft", ["--count", "20", "--max-seconds", "10"], 30)  # warm-up
        say(f"[{t.name}] streaming TTFT at concurrency 1: up to {plan.ttft_count} streams / {plan.ttft_max_s}s")
        row["ttft"] = self.streamload(
            t.stream,
            "ttft",
            ["--count", str(plan.ttft_count), "--max-seconds", str(plan.ttft_max_s)],
            plan.ttft_max_s + 40,
        )
        steps: list[dict[str, Any]] = []
        chunk_s = plan.stream_chunks * 0.05
        failed = False
        for n in plan.stream_steps:
            if failed and n != max(plan.stream_steps):
                continue  # after a failure, only the largest step still runs: it gives the RSS at the most streams
            deadline = plan.stream_ramp_s + chunk_s + (10 if n < 1000 else 15)
            say(
                f"[{t.name}] {n} concurrent streams x {plan.stream_chunks} chunks at 20/s "
                f"(opened over {plan.stream_ramp_s:.0f}s, deadline {deadline:.0f}s)"
            )
            r = self.streamload(
                t.stream,
                "streams",
                [
                    "--streams",
                    str(n),
                    "--chunks",
                    str(plan.stream_chunks),
                    "--ramp",
                    str(plan.stream_ramp_s),
                    "--deadline",
                    str(deadline),
                ],
                deadline + 20,
                sample_pid=t.stream.pid,
            )
            base = self.direct_rows.get("stream_steps_by_n", {}).get(n)
            gap = r["gap_jitter_ms"].get("p99")
            r["added_gap_p99_ms"] = round(gap - base["gap_jitter_ms"]["p99"], 3) if base and gap is not None else gap
            judged = r["added_gap_p99_ms"]
            base_p99 = base["gap_jitter_ms"].get("p99") if base else None
            if base_p99 is not None and base_p99 >= STREAM_BUDGET_MS and gap is not None:
                # The upstream and client alone were over the budget at this N (the load core saturated): no
                # baseline to subtract, so the gateway is judged on its own jitter, never on a negative "added".
                judged = gap
                t.notes.append(f"{n} streams: the direct row's own p99 was {base_p99} ms; judged on this row's own p99")
            chunks = r["transit_ms"].get("n") or 0
            # CPU per chunk relayed: the gateway's CPU time over the step (opening the streams included) per chunk.
            r["cpu_us_per_chunk"] = round(r["cpu_s"] / chunks * 1e6, 1) if chunks else None
            r["ok"] = (
                r["complete"] >= 0.99 * n
                and r.get("peak_open", n) >= 0.99 * n  # a slow opening never counts as low jitter
                and judged is not None
                and judged < STREAM_BUDGET_MS
            )
            steps.append(r)
            if r.get("peak_open", n) < n:
                # The streams never were all open at once: openings lagged behind the ramp (the gateway or the
                # load core saturated), so the step measured fewer concurrent streams than it says.
                t.notes.append(f"{n} streams: at most {r['peak_open']} were open at once")
            print(
                f"     {n:>5} streams: complete {r['complete']}/{n}, peak open {r.get('peak_open')}, "
                f"gap jitter p99 {gap} ms "
                f"(added {r['added_gap_p99_ms']}), transit p99 {r['transit_ms'].get('p99')} ms, "
                f"first chunk p99 {r['ttft_ms'].get('p99')} ms, "
                f"cpu {r['cpu_util']:.2f} core ({r['cpu_us_per_chunk']} us/chunk), rss peak {r['rss_peak_mb']} MB, "
                f"errors {r['errors'] or 0}",
                flush=True,
            )
            if not r["ok"]:
                failed = True
        row["stream_steps"] = steps
        passed = [s["streams"] for s in steps if s["ok"]]
        ok_prefix = 0
        for s in steps:  # the largest count such that it and every smaller step passed
            if not s["ok"]:
                break
            ok_prefix = s["streams"]
        row["max_streams_ok"] = ok_prefix if passed else 0
        top = next((s for s in steps if s["streams"] == 1000), None)
        row["rss_1000_streams_mb"] = top["rss_peak_mb"] if top else None
        row["added_gap_p99_1000_ms"] = top["added_gap_p99_ms"] if top else None
        most = next((s for s in steps if s["streams"] == 2000), None)
        row["rss_2000_streams_mb"] = most["rss_peak_mb"] if most else None
        row["added_gap_p99_2000_ms"] = most["added_gap_p99_ms"] if most else None
        row["cpu_us_per_chunk_1000"] = top["cpu_us_per_chunk"] if top else None


def _tput_ok(s: dict[str, Any]) -> bool:
    return s["p99_ms"] < P99_LATENCY_BUDGET_MS and s["errors"] <= 0.001 * max(1, s["requests"])


VARY_MARK = "about the sea."


def wrk_script(ep: Endpoint, limit: int) -> str:
    body = json.dumps(dict(CHAT_REQUEST, model=ep.model), separators=(",", ":"))
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]", 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in ep.headers.items()]
    if ep.vary:  # a new question each time: the prompt ends with this script's nonce and a counter
        head, tail_ = body.split(VARY_MARK)
        lines.append(
            textwrap.dedent(
                f"""
                local asked = 0
                local nonce = "{secrets.token_hex(4)}"
                function request()
                  asked = asked + 1
                  return wrk.format(nil, nil, nil, [==[{head}]==] .. nonce .. "-" .. asked .. [==[{tail_}]==])
                end"""
            )
        )
    if limit:
        lines.append(
            textwrap.dedent(
                f"""
                local count = 0
                function response(status, headers, body)
                  count = count + 1
                  if count >= {limit} then wrk.thread:stop() end
                end"""
            )
        )
    lines.append(
        textwrap.dedent(
            r"""
            function done(summary, latency, requests)
              local e = summary.errors
              io.write(string.format(
                'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
                '"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.2f}\n',
                summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
                latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
                latency.max, latency.mean))
            end"""
        )
    )
    return "\n".join(lines) + "\n"


def guardrail_costs(tmp: Path, quick: bool) -> dict[str, Any]:
    """What guardrails add (a rules-only check, the stream window): measured by bench/guardrails.py on its own."""
    try:
        return guardrails.run(tmp, quick, echo=False)
    except Exception as exc:
        say(f"[guardrails] FAILED: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:600]}


def web_search_overhead(quick: bool) -> dict[str, Any]:
    """A separate measurement, not a row: what web-search grounding adds over mock engines (bench/websearch.py)."""
    say("=== web search (mock engines) ===")
    try:
        return websearch.measure(300 if quick else 1000, GATEWAY_CORE)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:600]}
