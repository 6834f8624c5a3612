#!/usr/bin/env python3
"""Tollway side-by-side gateway benchmark: what a gateway adds in latency and CPU, on one core.

    .venv/bin/python bench/run.py            # full run (make bench), ~10-15 minutes
    .venv/bin/python bench/run.py --quick    # make bench-quick, < 5 minutes once peers are installed
    .venv/bin/python bench/run.py --profile  # Tollway under py-spy during the throughput run

Every gateway is pinned to core 1 (taskset -c 1); the load generators (wrk, bench/streamload.py), the upstreams
(nginx, bench/sse_upstream.py) and Redis share core 0. Rows: direct to the upstream (the floor), nginx
proxy_pass (the practical C limit), Tollway with a realistic feature set, LiteLLM proxy, Portkey gateway.
Everything listens on 127.0.0.1 only; every run is bounded in time and count; every child is killed on exit.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guardrails  # the guardrails' own costs, measured apart from the side-by-side rows
import peers  # bench/ is a directory of scripts, not a package
import websearch
from harness import (
    BENCH,
    FULL,
    GATEWAY_CORE,
    LOAD_CORE,
    P99_LATENCY_BUDGET_MS,
    PROCS,
    QUICK,
    REPO,
    RESULTS,
    STREAM_BUDGET_MS,
    Interference,
    Plan,
    background_load,
    http,
    say,
    wait_quiet,
)
from measure import Bench, guardrail_costs, web_search_overhead
from targets import (
    TARGETS,
    Target,
)


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def print_limiter_comparison(
    rows: list[dict[str, Any]], decisions: list[dict[str, Any]], compared: dict[str, Any] | None
) -> None:
    """redis-py next to the hand-written RESP client: one decision, and the gateway with it."""
    if decisions:
        print("\nlimiter decisions on loopback Redis (pinned to the gateway core):")
        for d in decisions:
            if "error" in d:
                print(f"  {d['tree']}: FAILED: {d['error']}")
                continue
            print(
                f"  {d['client']:>8} ({d['tree']}): p50 {d['p50_us']:.0f} us, p99 {d['p99_us']:.0f} us, "
                f"{d['decisions_per_s_at_64_in_flight']:,} decisions/s with 64 in flight"
            )
    by_name = {r["name"]: r for r in rows}
    new, old = by_name.get("tollway"), by_name.get("tollway-resp")
    if new and old and not new.get("error") and not old.get("error"):
        for what, key in (
            ("best req/s with p99 < 50 ms", "max_rps_under_p99_budget"),
            ("req/s at 32 connections", "wrk_c32"),
        ):
            a, b = (new.get(key) or {}).get("rps"), (old.get(key) or {}).get("rps")
            if a and b:
                print(f"  gateway {what}: redis-py {a:,.0f}, RESP client {b:,.0f} ({(a - b) / b:+.1%})")
    if compared and "error" in compared:
        print(f"  in turns: FAILED: {compared['error']}")
    elif compared:
        new_m, old_m = compared["median"]["redis-py"], compared["median"]["resp"]
        if old_m["rps"] and old_m["cpu_us_per_request"]:
            rps_change = (new_m["rps"] - old_m["rps"]) / old_m["rps"]
            cpu_new, cpu_old = new_m["cpu_us_per_request"], old_m["cpu_us_per_request"]
            print(
                f"  in turns at 32 connections (median of {compared['rounds']}): redis-py {new_m['rps']:,.0f} req/s, "
                f"{cpu_new:.0f} us CPU/request; RESP client {old_m['rps']:,.0f} req/s, {cpu_old:.0f} us CPU/request "
                f"({rps_change:+.1%} req/s, {(cpu_new - cpu_old) / cpu_old:+.1%} CPU/request)"
            )


def code_state() -> dict[str, Any]:
    """The commit and any uncommitted changes of the gateway's code when a row starts (the tree may move)."""

    def git(*args: str) -> str:
        p = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20)
        return p.stdout.rstrip("\n")  # not strip(): porcelain lines start with a status column that may be blank

    try:
        dirty = git("status", "--porcelain", "--", "dataplane", "cli", "operator", "pyproject.toml").splitlines()
        return {"head": git("rev-parse", "--short", "HEAD"), "uncommitted": [line[3:] for line in dirty]}
    except (OSError, subprocess.TimeoutExpired):
        return {}


# -- report ------------------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".2f", suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:{spec}}{suffix}"
    return str(value)


def add_deltas(rows: list[dict[str, Any]]) -> None:
    direct = next((r for r in rows if r["name"] == "direct" and not r.get("error")), None)
    if direct is None:
        return
    d_lat = direct.get("latency_c1") or {}
    d_ttft = (direct.get("ttft") or {}).get("ttft_ms", {})
    for r in rows:
        lat = r.get("latency_c1")
        if lat and d_lat:
            r["added_p50_ms"] = round(lat["p50_ms"] - d_lat["p50_ms"], 3)
            r["added_p99_ms"] = round(lat["p99_ms"] - d_lat["p99_ms"], 3)
        ttft = (r.get("ttft") or {}).get("ttft_ms", {})
        if ttft.get("n") and d_ttft.get("n"):
            r["added_ttft_p50_ms"] = round(ttft["p50"] - d_ttft["p50"], 3)
            r["added_ttft_p99_ms"] = round(ttft["p99"] - d_ttft["p99"], 3)


COLUMNS = [
    ("gateway", 26),
    ("c1 p50", 8),
    ("c1 p99", 8),
    ("+p50", 7),
    ("+p99", 7),
    ("req/s p99<50ms", 16),
    ("wrk c32 req/s", 18),
    ("CPU/req", 9),
    ("+TTFT p50", 10),
    ("streams ok", 10),
    ("+gap p99@1k", 11),
    ("RSS idle/1k", 12),
    ("bg", 4),
]


def table(rows: list[dict[str, Any]]) -> str:
    header = "  ".join(f"{name:<{w}}" for name, w in COLUMNS)
    out = [header, "-" * len(header)]
    for r in rows:
        name = r["label"][:26]
        if r.get("error"):
            out.append(f"{name:<26}  FAILED: {r['error'][:150]}")
            continue
        lat = r.get("latency_c1") or {}
        best = r.get("max_rps_under_p99_budget")
        c32 = r.get("wrk_c32") or {}
        rss = f"{fmt(r.get('rss_idle_mb'), '.0f')}/{fmt(r.get('rss_1000_streams_mb'), '.0f')}MB"
        streams = "-" if r.get("stream_error") else fmt(r.get("max_streams_ok"), "d")
        cells = [
            name,
            fmt(lat.get("p50_ms"), ".2f", "ms"),
            fmt(lat.get("p99_ms"), ".2f", "ms"),
            fmt(r.get("added_p50_ms"), ".2f"),
            fmt(r.get("added_p99_ms"), ".2f"),
            f"{best['rps']:.0f} (c={best['connections']})" if best else "none",
            f"{c32['rps']:.0f} (p99 {c32['p99_ms']:.0f}ms)" if c32 else "-",
            fmt(r.get("cpu_us_per_request"), ".0f", "us"),
            fmt(r.get("added_ttft_p50_ms"), ".2f", "ms"),
            streams,
            fmt(r.get("added_gap_p99_1000_ms"), ".2f", "ms"),
            rss,
            fmt(r.get("core1_other_load"), ".0%") if r.get("core1_other_load") is not None else "-",
        ]
        out.append("  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    return "\n".join(out)


def chart(result_path: Path) -> Path | None:
    try:
        python = peers.tools()
    except peers.InstallError as exc:
        say(f"no chart: {exc}")
        return None
    png = result_path.with_suffix(".png")
    p = subprocess.run(
        [str(python), str(BENCH / "chart.py"), str(result_path), str(png)], capture_output=True, text=True, timeout=120
    )
    if p.returncode != 0:
        say(f"chart failed: {p.stderr.strip()[-300:]}")
        return None
    return png


def environment(plan_name: str) -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            x.split(":", 1)[1].strip()
            for x in Path("/proc/cpuinfo").read_text().splitlines()
            if x.startswith("model name")
        )
    return {
        "mode": plan_name,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pinning": f"gateway on core {GATEWAY_CORE}; load generators, upstreams and Redis on core {LOAD_CORE}",
        "p99_budget_ms": P99_LATENCY_BUDGET_MS,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "stream_budget_ms": STREAM_BUDGET_MS,
    }


# -- main ----------------------------------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace, plan: Plan, tmp: Path) -> int:
    started = time.monotonic()
    load = background_load()
    if load > 0.10:
        say(
            f"WARNING: core {GATEWAY_CORE} is {load:.0%} busy before the start: other processes compete for it, so "
            "figures will be noisy (each row reports how much of the gateway core they took)"
        )
    bench = Bench(plan, tmp, args.quick)
    bench.start_services()
    wanted = [t for t in TARGETS if t == "direct" or t in args.only]
    rows: list[dict[str, Any]] = []
    for name in wanted:
        row: dict[str, Any] = {"name": name, "label": name}
        target: Target | None = None
        t0 = time.monotonic()
        say(f"=== {name} ===")
        if name != "direct":
            row["core1_background_before"] = wait_quiet(args.quiet_wait)
        try:
            method = "nginx_proxy" if name == "nginx" else name.replace("-", "_")
            target = getattr(bench, f"start_{method}")()
            row["label"] = target.label
            row["version"] = target.version
            if name == "tollway":  # the baseline row names its commit in its own note
                row["code"] = code_state()
                state = row["code"]
                target.notes.append(
                    f"code at {state.get('head', '?')}"
                    + (
                        f" + uncommitted changes in {', '.join(state['uncommitted'])}"
                        if state.get("uncommitted")
                        else ""
                    )
                )
            evalsha0 = bench.redis_evalsha_calls() if name.startswith("tollway") else 0
            watch = Interference(target.proc.pid) if target.proc is not None else None
            bench.measure(target, row)
            if watch is not None:
                row["core1_other_load"] = watch.share()
                if row["core1_other_load"] > 0.05:
                    target.notes.append(
                        f"WARNING: {row['core1_other_load']:.0%} of core {GATEWAY_CORE} went to other processes "
                        "during this row: its figures are pessimistic"
                    )
            if name.startswith("tollway"):
                calls = bench.redis_evalsha_calls() - evalsha0
                row["redis_evalsha_calls"] = calls
                status, body = http(bench._tollway_metrics)
                row["metrics_scrape_ok"] = status == 200 and b"tollway_" in body
                lines = sum(1 for _ in bench._tollway_log.open("rb"))
                row["access_log_lines"] = lines
                target.notes.append(
                    f"verified: {calls} Redis EVALSHA calls, metrics scrape "
                    f"{'ok' if row['metrics_scrape_ok'] else 'FAILED'}, {lines} access-log lines"
                )
            if name == "direct":
                bench.direct_rows["stream_steps_by_n"] = {s["streams"]: s for s in row.get("stream_steps", [])}
        except peers.InstallError as exc:
            row["error"] = f"install failed: {exc}"
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:600]
        finally:
            if target is not None:
                row["notes"] = target.notes
                if target.proc is not None:
                    PROCS.stop(target.proc)
        row["seconds"] = round(time.monotonic() - t0, 1)
        if row.get("error"):
            say(f"[{name}] FAILED: {row['error']}")
        rows.append(row)
    add_deltas(rows)
    decisions = bench.decision_latency() if any(n.startswith("tollway") for n in wanted) else []
    compared: dict[str, Any] | None = None
    if {"tollway", "tollway-resp"} <= set(wanted):
        say("=== redis-py and the RESP client in turns ===")
        try:
            compared = bench.compare_clients(3 if args.quick else 6)
        except Exception as exc:
            compared = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    search = web_search_overhead(args.quick)

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_path = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    wall = round(time.monotonic() - started, 1)
    direct = rows[0]
    upstream = {
        "nginx_max_rps": (direct.get("max_rps_under_p99_budget") or {}).get("rps"),
        "nginx_c32_rps": (direct.get("wrk_c32") or {}).get("rps"),
        "sse_1000_streams": next((s for s in direct.get("stream_steps", []) if s["streams"] == 1000), None),
    }
    say("=== guardrails (bench/guardrails.py) ===")
    guardrail_figures = guardrail_costs(tmp, args.quick)
    doc = {
        "environment": environment("quick" if args.quick else "full"),
        "plan": plan.__dict__,
        "rows": rows,
        "limiter_decisions": decisions,
        "clients_in_turns": compared,
        "upstream_capacity": upstream,
        "guardrails": guardrail_figures,
        "wall_seconds": wall,
        "timestamp": stamp,
        "web_search": search,
    }
    result_path.write_text(json.dumps(doc, indent=2) + "\n")

    print()
    print(table(rows))
    print()
    sse = upstream["sse_1000_streams"]
    print(
        f"upstream capacity (core {LOAD_CORE}, shared with the load generator): nginx "
        f"{fmt(upstream['nginx_max_rps'], '.0f')} req/s with p99 < 50 ms"
        + (
            f"; SSE server {sse['complete']}/1000 streams x 20 chunks/s complete, gap jitter p99 "
            f"{sse['gap_jitter_ms'].get('p99')} ms, {sse['cpu_util'] * 100:.0f}% of a core"
            if sse
            else ""
        )
    )
    print(
        "columns: c1 = concurrency 1 (absolute); + = added vs direct in this run (ms); req/s p99<50ms = best "
        "connection step with p99 under 50 ms; CPU/req = gateway CPU time per request at 32 connections; "
        "streams ok = most concurrent 20 chunk/s streams with p99 added inter-chunk delay < 10 ms; RSS at idle "
        "and at 1,000 open streams; bg = share of core 1 taken by other processes during the row"
    )
    for r in rows:
        for note in r.get("notes", []):
            print(f"  {r['name']}: {note}")
    if "error" not in guardrail_figures:
        print("\n" + guardrails.report(guardrail_figures))
    print_limiter_comparison(rows, decisions, compared)
    print("\n" + (websearch.report(search) if "rows" in search else f"web search: FAILED: {search['error']}"))
    png = chart(result_path)
    print(f"\nresults: {result_path.relative_to(REPO)}" + (f", chart: {png.relative_to(REPO)}" if png else ""))
    print(f"wall time: {wall:.0f}s")
    return 0


def run_profile(args: argparse.Namespace, plan: Plan, tmp: Path) -> int:
    """Tollway alone under py-spy during the 32-connection throughput run."""
    try:
        pyspy = peers.tools().parent / "py-spy"
    except peers.InstallError as exc:
        say(f"cannot profile: {exc}")
        return 1
    bench = Bench(plan, tmp, args.quick)
    bench.start_services()
    target = bench.start_tollway()
    assert target.json is not None and target.proc is not None
    bench.check(target)
    say("warm-up")
    bench.wrk(target.json, 8, plan.warmup_s)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"profile-{stamp}"
    seconds = plan.profile_s
    outputs = []
    for fmt_name, suffix in (("raw", ".collapsed.txt"), ("flamegraph", ".svg")):
        out = Path(str(base) + suffix)
        say(f"py-spy record ({fmt_name}) for {seconds}s while wrk runs 32 connections against Tollway")
        cmd = [
            str(pyspy),
            "record",
            "--pid",
            str(target.proc.pid),
            "--duration",
            str(seconds),
            "--rate",
            "200",
            "--format",
            fmt_name,
            "--output",
            str(out),
        ]
        if fmt_name == "raw":
            cmd.append("--nolineno")
        if args.nonblocking:
            cmd.append("--nonblocking")
        spy = subprocess.Popen(
            ["taskset", "-c", str(LOAD_CORE), *cmd],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        PROCS.children.append(("py-spy", spy))
        time.sleep(0.5)
        r = bench.wrk(target.json, 32, seconds)
        try:
            spy_out, _ = spy.communicate(timeout=seconds + 30)
        finally:
            PROCS.stop(spy)
        print(f"     {r['rps']:.0f} req/s under the profiler (p99 {r['p99_ms']:.1f} ms)")
        if not out.exists():
            say(f"py-spy produced no output: {spy_out.decode(errors='replace')[-400:]}")
            return 1
        outputs.append(out)
    PROCS.stop(target.proc)
    state = code_state()
    report = profile_report(outputs[0], expected=200 * seconds)
    report = (
        f"code at {state.get('head', '?')}"
        + (f" + uncommitted changes in {', '.join(state['uncommitted'])}" if state.get("uncommitted") else "")
        + "\n"
        + report
    )
    summary = Path(str(base) + ".top.txt")
    summary.write_text(report + "\n")
    print(report)
    print(
        f"\nflamegraph: {outputs[1].relative_to(REPO)}; stacks: {outputs[0].relative_to(REPO)}; "
        f"summary: {summary.relative_to(REPO)}"
    )
    return 0


def profile_report(collapsed: Path, expected: int, top: int = 25) -> str:
    """Self time per function (leaf frame), inclusive time of Tollway's own functions and self time per
    component, for the event-loop thread, from py-spy's collapsed stacks (idle samples are not recorded)."""
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    groups: dict[str, int] = {}
    total = other_threads = 0
    entry = ("main (tollway_cli/main.py)", "_run (tollway_cli/main.py)", "run (tollway_dataplane/server.py)")
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if not any(f.startswith("<module>") for f in frames[:3]):  # a helper thread (executor, DNS), not the loop
            other_threads += n
            continue
        total += n
        leaf = frames[-1]
        self_time[leaf] = self_time.get(leaf, 0) + n
        groups[_group(leaf)] = groups.get(_group(leaf), 0) + n
        for frame in set(frames):
            if "tollway_dataplane" in frame and not frame.endswith(entry):
                inclusive[frame] = inclusive.get(frame, 0) + n
    if not total:
        return "no samples"
    lines = [
        f"Tollway's event-loop thread under 32 connections: {total} busy samples of {expected} "
        f"(~{100 * total / expected:.0f}% of the time on CPU; helper threads: {other_threads} samples); "
        "% below are of the loop thread's busy time",
        f"top {top} functions by self time:",
    ]
    for frame, n in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * n / total:5.1f}%  {_short(frame)}")
    lines.append("Tollway functions by inclusive time (self + callees):")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {100 * n / total:5.1f}%  {_short(frame)}")
    lines.append("self time by component:")
    for g, n in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {100 * n / total:5.1f}%  {g}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*)\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "dataplane/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func}  ({path})"


def _group(frame: str) -> str:
    path = frame.rpartition("(")[2]
    for marker, name in (
        ("tollway_dataplane", "tollway_dataplane"),
        ("aiohttp", "aiohttp"),
        ("redis", "redis-py"),
        ("prometheus_client", "prometheus_client"),
        ("multidict", "multidict/yarl"),
        ("yarl", "multidict/yarl"),
        ("logging", "logging"),
        ("asyncio", "asyncio"),
        ("uvloop", "uvloop"),
    ):
        if marker in path:
            return name
    return "other (stdlib, native, loop internals)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tollway gateway benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="shorter bounds everywhere (< 5 minutes)")
    parser.add_argument(
        "--only",
        default=",".join(TARGETS[1:]),
        help="comma-separated rows besides direct: nginx,tollway,tollway-resp,litellm,portkey",
    )
    parser.add_argument("--profile", action="store_true", help="profile Tollway with py-spy instead of the table")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait before each row for the gateway core to be quiet (default: 60, 0 with --quick)",
    )
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="--profile: sample without pausing Tollway (less overhead, but some stacks come out torn)",
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir with configs and logs")
    args = parser.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = args.only - set(TARGETS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs at least 2 cores: one for the gateway, one for the load generator")
    if not shutil.which("taskset"):
        parser.error("taskset is missing (Debian: util-linux)")
    os.sched_setaffinity(0, {LOAD_CORE})  # this process and everything it starts: core 0 unless told otherwise
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGTERM, _on_signal)
    plan = QUICK if args.quick else FULL
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    tmp = Path(tempfile.mkdtemp(prefix="tollway-bench-"))
    say(f"temp dir (configs, logs): {tmp}")
    try:
        return run_profile(args, plan, tmp) if args.profile else run_bench(args, plan, tmp)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        PROCS.stop_all()
        if not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
