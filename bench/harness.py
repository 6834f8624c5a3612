"""The harness every bench row runs on: where things run (the two cores, the paths), the run's plan
(FULL, QUICK), children in their own process groups and killed on exit, CPU/RSS sampling from /proc, how busy
the gateway core is with other processes, and small HTTP helpers."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
LOAD_CORE = 0
GATEWAY_CORE = 1
P99_LATENCY_BUDGET_MS = 50.0  # throughput: the highest rate whose p99 stays under this
STREAM_BUDGET_MS = 10.0  # streams: p99 added inter-chunk delay must stay under this


@dataclass
class Plan:
    """How much of everything a run does; `--quick` shrinks every bound."""

    warmup_s: int
    c1_requests: int
    c1_max_s: int
    tput_connections: list[int]
    tput_s: int
    refine: bool
    ttft_count: int
    ttft_max_s: int
    stream_steps: list[int]
    stream_chunks: int
    stream_ramp_s: float
    profile_s: int


FULL = Plan(
    warmup_s=3,
    c1_requests=3000,
    c1_max_s=20,
    tput_connections=[1, 2, 4, 8, 16, 32, 64, 128, 256],
    tput_s=6,
    refine=True,
    ttft_count=500,
    ttft_max_s=15,
    stream_steps=[100, 250, 500, 1000, 2000],
    stream_chunks=100,
    stream_ramp_s=2.0,
    profile_s=20,
)
QUICK = Plan(
    warmup_s=2,
    c1_requests=1000,
    c1_max_s=6,
    tput_connections=[1, 8, 32, 64, 128],
    tput_s=3,
    refine=False,
    ttft_count=150,
    ttft_max_s=5,
    stream_steps=[250, 1000, 2000],
    stream_chunks=60,
    stream_ramp_s=1.0,
    profile_s=10,
)


def say(message: str) -> None:
    print(f">> {message}", flush=True)


# -- processes -------------------------------------------------------------------------------------------------


class Processes:
    """Every child in its own process group; all of them are killed on exit, whatever the exit."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []
        atexit.register(self.stop_all)

    def start(
        self,
        name: str,
        cmd: list[str],
        core: int | None,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen:
        full = ["taskset", "-c", str(core), *cmd] if core is not None else cmd  # taskset execs: same pid
        out = log.open("ab")
        proc = subprocess.Popen(
            full,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        out.close()
        self.children.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 8.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # workers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)
        self.children = [(n, p) for n, p in self.children if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.children)):
            self.stop(proc, timeout=3)


PROCS = Processes()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
    return total / _TICK


def rss_mb(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def core_busy_seconds(core: int) -> float:
    """Process time run on one core, from /proc/stat: user, nice, system, steal. Interrupts and softirqs are
    left out: on loopback they are mostly the gateway's own network traffic, not another process."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            f = [int(x) for x in line.split()[1:]]
            return (f[0] + f[1] + f[2] + f[7]) / _TICK
    return 0.0


def _kernel_softirq_pid(core: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == f"ksoftirqd/{core}":
                    return int(entry)
            except OSError:
                continue
    return None


class Interference:
    """How much of the gateway's core went to other processes: its process time, minus the gateway's, minus
    the kernel's softirq thread (on loopback that is mostly the gateway's own network traffic)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.softirqd = _kernel_softirq_pid(GATEWAY_CORE)
        self.t0 = time.monotonic()
        self.busy0 = core_busy_seconds(GATEWAY_CORE)
        self.own0 = self._own()

    def _own(self) -> float:
        own = cpu_seconds(self.pid)
        if self.softirqd is not None:
            own += cpu_seconds(self.softirqd)
        return own

    def share(self) -> float:
        wall = time.monotonic() - self.t0
        other = (core_busy_seconds(GATEWAY_CORE) - self.busy0) - (self._own() - self.own0)
        return round(max(0.0, other) / wall, 3) if wall > 0 else 0.0


def background_load(seconds: float = 1.0) -> float:
    """Share of the gateway core busy before the gateway starts: other processes on this machine."""
    busy0, t0 = core_busy_seconds(GATEWAY_CORE), time.monotonic()
    time.sleep(seconds)
    return (core_busy_seconds(GATEWAY_CORE) - busy0) / (time.monotonic() - t0)


def wait_quiet(limit_s: float, threshold: float = 0.10) -> float:
    """Wait (at most limit_s) until the gateway core is quiet; returns the last background load seen."""
    deadline = time.monotonic() + limit_s
    load = background_load()
    if load > threshold and limit_s > 0:
        say(f"core {GATEWAY_CORE} is {load:.0%} busy with other processes: waiting up to {limit_s:.0f}s for quiet")
        while load > threshold and time.monotonic() < deadline:
            load = background_load(2.0)
    return round(load, 3)


def tail(path: Path, lines: int = 6) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-600:]
    except OSError:
        return ""


def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before it was ready: {tail(log)}")
        try:
            status, _ = http(url, timeout=2)
            if status in ok:
                return
            last = f"status {status}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f}s ({last}): {tail(log)}")
