"""The profile mode (`--profile`): Tollway alone under py-spy while wrk drives 32 connections (or, with
`--profile-streams N`, while it relays N concurrent streams), and the summary of its collapsed stacks (self time,
Tollway's inclusive time, self time per component). When `perf` is installed, one more pass under `perf record`
splits the process's CPU by where it runs: the kernel (sockets, loopback delivery), the Python interpreter,
uvloop's C, the C extensions; py-spy cannot tell a Python frame's own work from the system calls it makes."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a directory of scripts, not a package
import peers
from harness import LOAD_CORE, PROCS, REPO, RESULTS, Plan, say
from measure import Bench
from report import code_state
from targets import Target


def run_profile(args: argparse.Namespace, plan: Plan, tmp: Path) -> int:
    """Tollway alone under py-spy during the 32-connection throughput run (the tollway-stages row's config with
    `--only tollway-stages`)."""
    try:
        pyspy = peers.tools().parent / "py-spy"
    except peers.InstallError as exc:
        say(f"cannot profile: {exc}")
        return 1
    bench = Bench(plan, tmp, args.quick)
    bench.start_services()
    staged = "tollway-stages" in args.only and "tollway" not in args.only
    target = bench.start_tollway_stages() if staged else bench.start_tollway()
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
        load = f"{args.profile_streams} streams are relayed" if args.profile_streams else "wrk runs 32 connections"
        say(f"py-spy record ({fmt_name}) for {seconds}s while {load} through Tollway")
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
        (text, _, _), spy_out = _sampled("py-spy", cmd, bench, target, args.profile_streams, seconds)
        print(f"     {text} under the profiler")
        if not out.exists():
            say(f"py-spy produced no output: {spy_out.decode(errors='replace')[-400:]}")
            return 1
        outputs.append(out)
    split = _perf_split(bench, target, args.profile_streams, seconds, tmp)
    PROCS.stop(target.proc)
    state = code_state()
    load = f"{args.profile_streams} streams" if args.profile_streams else "32 connections"
    report = profile_report(outputs[0], expected=200 * seconds, load=load) + "\n" + split
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


def _load(bench: Bench, target: Target, streams: int, seconds: int) -> tuple[str, float | None, str]:
    """The profiled load: wrk at 32 connections, or `streams` concurrent streams (opened over 2 s, each long
    enough to outlast the sampling). What it did, the gateway's CPU per unit (us) and the unit."""
    if not streams:
        assert target.json is not None
        w = bench.wrk(target.json, 32, seconds)
        return f"{w['rps']:.0f} req/s (p99 {w['p99_ms']:.1f} ms)", w.get("cpu_us_per_request"), "request"
    assert target.stream is not None
    chunks = (seconds + 4) * 20  # 20 chunks a second
    r = bench.streamload(
        target.stream,
        "streams",
        ["--streams", str(streams), "--chunks", str(chunks), "--ramp", "2", "--deadline", str(seconds + 15)],
        seconds + 35,
    )
    chunks_relayed = r["transit_ms"].get("n") or 0
    per_chunk = r["cpu_s"] / chunks_relayed * 1e6 if chunks_relayed else None
    shown = f"{per_chunk:.1f} us/chunk" if per_chunk is not None else "no chunks"
    return f"{r['complete']}/{streams} streams complete, {shown}, errors {r['errors'] or 0}", per_chunk, "chunk"


def _sampled(
    name: str, command: list[str], bench: Bench, target: Target, streams: int, seconds: int
) -> tuple[tuple[str, float | None, str], bytes]:
    """The profiled load run while `command` (a sampler attached to Tollway, on the load core) records: what the
    load did (see `_load`) and the sampler's output."""
    sampler = subprocess.Popen(
        ["taskset", "-c", str(LOAD_CORE), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    PROCS.children.append((name, sampler))
    time.sleep(0.5)
    load = _load(bench, target, streams, seconds)
    try:
        output, _ = sampler.communicate(timeout=seconds + 30)
    finally:
        PROCS.stop(sampler)
    return load, output or b""


# perf's shared objects, grouped: what a share of the process's CPU is spent on.
_DSO_GROUPS = (
    ("[kernel", "kernel (system calls, TCP, loopback delivery)"),
    ("libpython", "Python interpreter (Tollway and the libraries' Python code)"),
    ("uvloop", "uvloop (libuv's loop, transports)"),
    ("loop.cpython", "uvloop (libuv's loop, transports)"),
    ("python3.", "Python interpreter (Tollway and the libraries' Python code)"),  # a statically linked one
    ("libc.so", "libc (memory, copies)"),
    ("libm.so", "libc (memory, copies)"),
)


def _perf_split(bench: Bench, target: Target, streams: int, seconds: int, tmp: Path) -> str:
    """One more pass of the same load under `perf record` (every thread, 1 kHz), summed by shared object."""
    perf = shutil.which("perf")
    if perf is None:
        return "no perf here (Debian: linux-perf): no split between the kernel and the interpreter"
    assert target.proc is not None
    data = tmp / "perf.data"
    say(f"perf record for {seconds}s under the same load (CPU by kernel, interpreter, C extensions)")
    command = [perf, "record", "-F", "1000", "-p", str(target.proc.pid), "-o", str(data), "--", "sleep", str(seconds)]
    (text, per_unit, unit), err = _sampled("perf", command, bench, target, streams, seconds)
    report = subprocess.run(
        [perf, "report", "-i", str(data), "--sort", "dso", "--stdio", "-q"], capture_output=True, text=True
    )
    shares: dict[str, float] = {}
    for line in report.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
        if m:
            name = next((g for marker, g in _DSO_GROUPS if marker in m.group(2)), "C extensions and other")
            shares[name] = shares.get(name, 0.0) + float(m.group(1))
    if not shares:
        return f"perf gave no samples: {err.decode(errors='replace')[-300:] or report.stderr[-300:]}"
    lines = [f"CPU of the whole process by where it runs (perf, {text}):"]
    for name, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        cost = f" = {share / 100 * per_unit:5.1f} us a {unit}" if per_unit else ""
        lines.append(f"  {share:5.1f}%{cost}  {name}")
    return "\n".join(lines)


def profile_report(collapsed: Path, expected: int, top: int = 25, load: str = "32 connections") -> str:
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
        f"Tollway's event-loop thread under {load}: {total} busy samples of {expected} "
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
