"""Chart of a bench/run.py result: `python chart.py RESULT.json OUT.png` (run with the bench tools venv)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src: str, dst: str) -> None:
    with open(src) as f:
        doc = json.load(f)
    rows = list(doc["rows"])
    names = [r["label"].replace(" (the floor)", "").replace(" (the practical C limit)", "") for r in rows]
    names = [n.replace("direct to the upstream", "direct").replace("nginx proxy_pass", "nginx proxy") for n in names]
    palette = {
        "direct": "#9e9e9e",
        "nginx": "#607d8b",
        "tollway": "#2e7d32",
        "tollway-stages": "#66bb6a",
        "tollway-before": "#a5d6a7",
        "tollway-stages-before": "#c5e1a5",
        "litellm": "#c62828",
        "portkey": "#6a1b9a",
    }
    colors = [palette.get(r["name"], "#333333") for r in rows]

    def get(r, *path):
        for p in path:
            if not isinstance(r, dict):
                return None
            r = r.get(p)
        return r

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(
        f"Gateway overhead on one core ({doc['environment']['mode']} run {doc['timestamp']}; "
        f"gateway on core 1, load + upstream on core 0)",
        fontsize=11,
    )

    ax = axes[0][0]
    x = range(len(rows))
    p50 = [get(r, "added_p50_ms") or 0 for r in rows]
    p99 = [get(r, "added_p99_ms") or 0 for r in rows]
    ax.bar([i - 0.2 for i in x], p50, 0.4, label="added p50", color=colors)
    ax.bar([i + 0.2 for i in x], p99, 0.4, label="added p99", color=colors, alpha=0.5, hatch="//")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_title("added latency at concurrency 1 (ms, vs direct)")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    best = [get(r, "max_rps_under_p99_budget", "rps") or 0 for r in rows]
    c32 = [get(r, "wrk_c32", "rps") or 0 for r in rows]
    ax.bar([i - 0.2 for i in x], best, 0.4, label="best req/s with p99 < 50 ms", color=colors)
    ax.bar([i + 0.2 for i in x], c32, 0.4, label="wrk 32 connections", color=colors, alpha=0.5, hatch="//")
    ax.set_yscale("log")
    ax.set_title("throughput on one core (req/s, log)")
    ax.legend(fontsize=8)
    for i, v in enumerate(best):
        if v:
            ax.text(i - 0.2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)

    ax = axes[1][0]
    for r, name, color in zip(rows, names, colors, strict=True):
        steps = r.get("stream_steps") or []
        if steps:
            ax.plot(
                [s["streams"] for s in steps],
                [max(0.01, s["gap_jitter_ms"].get("p99") or 0) for s in steps],
                marker="o",
                label=name,
                color=color,
            )
    ax.axhline(10, color="black", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent streams (20 chunks/s each)")
    ax.set_title("p99 inter-chunk delay vs the 50 ms cadence (ms, log; budget: direct + 10)")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    cpu = [get(r, "cpu_us_per_request") or 0 for r in rows]
    rss = [get(r, "rss_1000_streams_mb") or 0 for r in rows]
    ax.bar([i - 0.2 for i in x], cpu, 0.4, label="CPU µs per request (32 conns)", color=colors)
    ax2 = ax.twinx()
    ax2.bar([i + 0.2 for i in x], rss, 0.4, label="RSS MB at 1,000 streams", color=colors, alpha=0.5, hatch="//")
    ax.set_yscale("log")
    ax.set_title("CPU per request (solid, µs, log) and RSS at 1,000 streams (hatched, MB)")

    for a in (axes[0][0], axes[0][1], axes[1][1]):
        a.set_xticks(list(x))
        a.set_xticklabels(names, fontsize=8, rotation=12)
    for i, r in enumerate(rows):
        if r.get("error"):
            axes[0][1].text(i, 1, "failed", ha="center", color="red", fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
