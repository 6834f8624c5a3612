"""The report: each row's figures minus the direct row's, the printed table, the limiter comparison lines,
the PNG chart (bench/chart.py in the tools venv), the machine's environment and the code state of a run."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a directory of scripts, not a package
import guardrails
import peers
import websearch
from harness import BENCH, GATEWAY_CORE, LOAD_CORE, P99_LATENCY_BUDGET_MS, REPO, STREAM_BUDGET_MS, say


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
    ("+gap p99@2k", 11),
    ("us/chunk@1k", 11),
    ("RSS idle/1k/2k", 15),
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
        rss = (
            f"{fmt(r.get('rss_idle_mb'), '.0f')}/{fmt(r.get('rss_1000_streams_mb'), '.0f')}/"
            f"{fmt(r.get('rss_2000_streams_mb'), '.0f')}MB"
        )
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
            fmt(r.get("added_gap_p99_2000_ms"), ".2f", "ms"),
            fmt(r.get("cpu_us_per_chunk_1000"), ".1f", "us"),
            rss,
            fmt(r.get("core1_other_load"), ".0%") if r.get("core1_other_load") is not None else "-",
        ]
        out.append("  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True)))
    return "\n".join(out)


def load_bound_steps(rows: list[dict[str, Any]]) -> list[str]:
    """The stream steps the direct row (the load generator straight at the upstream, both on the load core)
    failed by itself: there the load core, not a gateway, sets the jitter, so no row's result at that step
    measures a gateway, and a target at that step cannot be judged in this run."""
    direct = next((r for r in rows if r["name"] == "direct" and not r.get("error")), None)
    out = []
    for step in (direct or {}).get("stream_steps", []):
        if not step.get("ok"):
            out.append(
                f"{step['streams']} streams: the direct row itself failed this step (gap jitter p99 "
                f"{step['gap_jitter_ms'].get('p99')} ms, peak open {step.get('peak_open')}, first chunk p99 "
                f"{step['ttft_ms'].get('p99')} ms): the load core cannot drive it on this machine, so no row's "
                "result at this step measures its gateway"
            )
    return out


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


def print_before_after(compared: list[dict[str, Any]]) -> None:
    """--before: each row against its before row, measured in turns."""
    for c in compared:
        name = c["row"]
        if "median" not in c:
            print(f"\n{name} against {name}-before in turns: FAILED: {c.get('error')}")
            continue
        now, then = c["median"][name], c["median"][f"{name}-before"]
        cpu_now, cpu_then = now["cpu_us_per_request"], then["cpu_us_per_request"]
        print(
            f"\n{c['labels'][name]} against {c['labels'][f'{name}-before']}, in turns at 32 connections (median of "
            f"{c['rounds']}): {now['rps']:,.0f} vs {then['rps']:,.0f} req/s ({now['rps'] / then['rps'] - 1:+.1%}), "
            f"{cpu_now:.0f} vs {cpu_then:.0f} us CPU/request ({cpu_now / cpu_then - 1:+.1%})"
        )


def print_report(doc: dict[str, Any], result_path: Path) -> None:
    """The table and the lines under it, the separate measurements' reports, the limiter comparison, the chart."""
    rows, upstream, wall = doc["rows"], doc["upstream_capacity"], doc["wall_seconds"]
    decisions, compared = doc["limiter_decisions"], doc["clients_in_turns"]
    guardrail_figures, search = doc["guardrails"], doc["web_search"]
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
    for line in load_bound_steps(rows):
        print(f"  {line}")
    if "error" not in guardrail_figures:
        print("\n" + guardrails.report(guardrail_figures))
    print_limiter_comparison(rows, decisions, compared)
    print_before_after(doc.get("before_after_in_turns") or [])
    print("\n" + (websearch.report(search) if "rows" in search else f"web search: FAILED: {search['error']}"))
    png = chart(result_path)
    print(f"\nresults: {result_path.relative_to(REPO)}" + (f", chart: {png.relative_to(REPO)}" if png else ""))
    print(f"wall time: {wall:.0f}s")
