"""Chart of a bench/inference_lb.py result: `python inference_lb_chart.py RESULT.json OUT.png` (bench tools venv)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"round-robin": "#9e9e9e", "least-load": "#1565c0", "prefix-affinity": "#2e7d32"}


def main(src: str, dst: str) -> None:
    with open(src) as f:
        doc = json.load(f)
    runs = doc["runs"]
    names = [r["picker"] for r in runs]
    colors = [COLORS.get(n, "#333333") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    fig.suptitle(
        f"{doc['servers']} simulated model servers, {doc['apps']} shared system prompts "
        f"({doc['mode']} run {doc['timestamp']}): TTFT under bursts, throughput at saturation",
        fontsize=11,
    )

    ax = axes[0]
    width = 0.26
    for j, (key, label) in enumerate((("ttft_p50_ms", "p50"), ("ttft_p90_ms", "p90"), ("ttft_p99_ms", "p99"))):
        xs = [i + (j - 1) * width for i in range(len(runs))]
        ax.bar(xs, [r[key] for r in runs], width, color=colors, alpha=1.0 - 0.3 * j, label=label)
    ax.set_xticks(range(len(runs)), names)
    ax.set_title("TTFT, bursty arrivals (ms, lower is better)")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.bar(names, [r["saturated_requests_per_second"] for r in runs], color=colors)
    ax.set_title("throughput at saturation (req/s)")
    for i, r in enumerate(runs):
        ax.text(
            i,
            r["saturated_requests_per_second"],
            f"{r['saturated_output_tokens_per_second']:,.0f} tok/s",
            ha="center",
            va="bottom",
            fontsize=8,
        )

    ax = axes[2]
    ax.bar(names, [100 * r["prefix_cache_hit_ratio"] for r in runs], color=colors)
    ax.set_ylim(0, 100)
    ax.set_title("prompt tokens served from the prefix cache (%)")

    for ax in axes:
        ax.tick_params(axis="x", labelsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
