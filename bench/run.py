#!/usr/bin/env python3
"""Tollway side-by-side gateway benchmark: what a gateway adds in latency and CPU, on one core.

    .venv/bin/python bench/run.py            # full run (make bench), ~10-15 minutes
    .venv/bin/python bench/run.py --quick    # make bench-quick, < 5 minutes once peers are installed
    .venv/bin/python bench/run.py --profile  # Tollway under py-spy during the throughput run
    .venv/bin/python bench/run.py --profile --profile-streams 1000  # ... while it relays 1,000 streams

Every gateway is pinned to core 1 (taskset -c 1); the load generators (wrk, bench/streamload.py), the upstreams
(nginx, bench/sse_upstream.py) and Redis share core 0. Rows: direct to the upstream (the floor), nginx
proxy_pass (the practical C limit), Tollway with a realistic feature set, LiteLLM proxy, Portkey gateway.
Everything listens on 127.0.0.1 only; every run is bounded in time and count; every child is killed on exit.
See bench/README.md for what each figure means. This file is the entry point; the harness, the rows, the
measurements, the report and the profile mode are in harness.py, targets.py, measure.py, report.py and
profiling.py next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # bench/ is a directory of scripts, not a package
from harness import (
    FULL,
    GATEWAY_CORE,
    LOAD_CORE,
    PROCS,
    QUICK,
    RESULTS,
    Interference,
    Plan,
    background_load,
    http,
    say,
    wait_quiet,
)
from measure import Bench, guardrail_costs, web_search_overhead
from profiling import run_profile
from report import add_deltas, code_state, environment, print_report
from targets import DEFAULT_ROWS, TARGETS, Target


def _on_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


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
    bench.before = args.before or ""
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
    before_after = before_after_in_turns(bench, wanted, args.quick) if args.before else []
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
        "before_after_in_turns": before_after,
        "upstream_capacity": upstream,
        "guardrails": guardrail_figures,
        "wall_seconds": wall,
        "timestamp": stamp,
        "web_search": search,
    }
    result_path.write_text(json.dumps(doc, indent=2) + "\n")

    print_report(doc, result_path)
    return 0


def before_after_in_turns(bench: Bench, wanted: list[str], quick: bool) -> list[dict[str, Any]]:
    """With --before: each row and its before row once more, both up, measured in turns (the rows above ran
    minutes apart, and this host's speed drifts more than most changes move the figures)."""
    out: list[dict[str, Any]] = []
    for name in ("tollway", "tollway-stages"):
        if name not in wanted or f"{name}-before" not in wanted:
            continue
        say(f"=== {name} and {name}-before in turns ===")
        try:
            targets = {}
            for row in (name, f"{name}-before"):
                targets[row] = getattr(bench, f"start_{row.replace('-', '_')}")()
            compared = bench.in_turns(targets, 4 if quick else 8)
        except Exception as exc:
            compared = {"error": f"{type(exc).__name__}: {exc}"[:400]}
        compared["row"] = name
        out.append(compared)
        if "median" in compared:
            now, then = compared["median"][name], compared["median"][f"{name}-before"]
            say(
                f"[{name}] in turns, medians: {now['rps']:.0f} vs {then['rps']:.0f} req/s, "
                f"{now['cpu_us_per_request']:.0f} vs {then['cpu_us_per_request']:.0f} us CPU per request (before)"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tollway gateway benchmark (see bench/README.md)")
    parser.add_argument("--quick", action="store_true", help="shorter bounds everywhere (< 5 minutes)")
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated rows besides direct, of {','.join(TARGETS[1:])} (default: {','.join(DEFAULT_ROWS)})",
    )
    parser.add_argument(
        "--before",
        metavar="COMMIT",
        help="also measure the tollway row's config (and the stages row's, when it runs) on the code at COMMIT",
    )
    parser.add_argument("--profile", action="store_true", help="profile Tollway with py-spy instead of the table")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait before each row for the gateway core to be quiet (default: 60, 0 with --quick)",
    )
    parser.add_argument(
        "--profile-streams",
        type=int,
        default=0,
        metavar="N",
        help="--profile: sample while N concurrent streams are relayed instead of the 32-connection throughput run",
    )
    parser.add_argument(
        "--nonblocking",
        action="store_true",
        help="--profile: sample without pausing Tollway (less overhead, but some stacks come out torn)",
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir with configs and logs")
    args = parser.parse_args(argv)
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    if args.before:
        args.only.add("tollway-before")
        if "tollway-stages" in args.only:
            args.only.add("tollway-stages-before")
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
