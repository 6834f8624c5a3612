#!/usr/bin/env python3
"""Run the reliability tier and write what it measured into docs/reliability.md (`make reliability-report`).

The figures section (between the `figures` markers) is replaced with the counts the tier collected in this run:
inputs tried per endpoint, how the gateway answered them, fault scenarios survived, streams kept through reloads
and shutdowns, the gateway's memory before and after the fuzz run, and the tier's duration. Nothing is written
when a test fails. TOLLWAY_FUZZ_EXAMPLES (inputs per endpoint) and TOLLWAY_FUZZ_SEED pass through to the tier.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def run_tier(figures: Path, junit: Path) -> int:
    env = {**os.environ, "TOLLWAY_RELIABILITY_FIGURES": str(figures)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/reliability",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
    ]
    return subprocess.call(command, cwd=ROOT, env=env)


def collect(figures: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in figures.read_text().splitlines():
        for name, value in json.loads(line)["counts"].items():
            if "rss" in name:
                counts[name] = value
            else:
                counts[name] += value
    return counts


def outcomes(junit: Path) -> tuple[Counter[str], float]:
    tally: Counter[str] = Counter()
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    for case in suite.iter("testcase"):
        skipped = case.find("skipped")
        if skipped is not None:
            tally["xfailed" if (skipped.get("type") or "").endswith("xfail") else "skipped"] += 1
        elif case.find("failure") is not None or case.find("error") is not None:
            tally["failed"] += 1
        else:
            tally["passed"] += 1
    return tally, float(suite.get("time") or 0)


def section(counts: Counter[str], tally: Counter[str], seconds: float) -> str:
    endpoints = sorted(k.removeprefix("fuzz inputs ") for k in counts if k.startswith("fuzz inputs "))
    per_endpoint = ", ".join(f"{e} {counts['fuzz inputs ' + e]:,}" for e in endpoints)
    fuzz = counts["fuzz inputs"]
    answered = ", ".join(f"{counts['fuzz answers ' + c]:,} {c}" for c in ("2xx", "4xx", "5xx"))
    total = fuzz + counts["corpus inputs"] + counts["label inputs"]
    before, after = counts["fuzz gateway rss kB before"], counts["fuzz gateway rss kB after"]
    memory = f"{before / 1024:.0f} MB before, {after / 1024:.0f} MB after" if before and after else "not measured here"
    budget = os.environ.get("TOLLWAY_FUZZ_EXAMPLES", "750")
    seed = os.environ.get("TOLLWAY_FUZZ_SEED")
    inputs = "derandomized (the same inputs every run)" if seed is None else f"seed {seed}"
    lines = [
        START,
        f"Measured by `make reliability-report` on {date.today().isoformat()} ({platform.system()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}), {budget} generated inputs per property, "
        f"{inputs}:",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| inputs tried | **{total:,}**: {fuzz:,} generated ({per_endpoint}), "
        f"{counts['corpus inputs']:,} regression-corpus entries, {counts['label inputs']:,} invented model names |",
        f"| answers to generated inputs | {answered} |",
        f"| fault scenarios survived | **{counts['fault scenarios survived']}** |",
        f"| streams kept through reloads and SIGTERM | **{counts['streams kept']}** of {counts['streams opened']} |",
        f"| gateway memory across the fuzz run | {memory} |",
        f"| tests | {tally['passed']} passed, {tally['xfailed']} known defects marked xfail |",
        f"| tier duration | {seconds:.0f} s |",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        figures, junit = Path(scratch) / "figures.jsonl", Path(scratch) / "junit.xml"
        figures.touch()
        status = run_tier(figures, junit)
        if status != 0:
            print("reliability-report: the tier failed; docs/reliability.md is unchanged", file=sys.stderr)
            return status
        tally, seconds = outcomes(junit)
        text = section(collect(figures), tally, seconds)
    doc = DOC.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(doc):
        print(f"reliability-report: no figures markers in {DOC}", file=sys.stderr)
        return 2
    DOC.write_text(pattern.sub(lambda _: text, doc))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
