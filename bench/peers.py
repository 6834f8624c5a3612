"""Installs what the benchmark needs outside the repo, once, into a cache directory, and says so on screen.

Everything goes under ~/.cache/tollway/bench (or $XDG_CACHE_HOME/tollway/bench, or $TOLLWAY_BENCH_CACHE):
- litellm-venv/   LiteLLM proxy, pinned version, in its own virtualenv
- portkey-X.Y.Z/  Portkey gateway from npm, with @hono/node-server pinned by an npm override
- tools-venv/     matplotlib (the chart) and py-spy (--profile); never installed into the project's venv
Debian packages (nginx-light, wrk, redis-server) are installed with apt-get when missing.

Each installer returns a path on success or raises InstallError with the reason; a failed peer is reported as
a row with that reason, never a crash. A successful install leaves a stamp file, so the next run reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
HONO_NODE_SERVER = "1.14.1"  # newer @hono/node-server versions break Portkey's streamed responses
TOOLS = ["matplotlib>=3.8", "py-spy>=0.3.14"]


class InstallError(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("TOLLWAY_BENCH_CACHE"):
        root = Path(os.environ["TOLLWAY_BENCH_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        root = base / "tollway" / "bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _say(message: str) -> None:
    print(f">> {message}", flush=True)


def _run(cmd: list[str], log: Path, timeout: float, cwd: Path | None = None, env: dict | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InstallError(f"{cmd[0]} timed out after {timeout:.0f}s (log: {log})") from None
        except OSError as exc:
            raise InstallError(f"{cmd[0]}: {exc}") from None
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise InstallError(f"{' '.join(cmd[:4])} exited {proc.returncode}: {' | '.join(tail)[-300:]} (log: {log})")


def _base_python() -> str:
    """A python3 to create venvs with: the interpreter behind the project's venv."""
    return (
        os.path.join(sys.base_prefix, "bin", "python3")
        if os.path.exists(os.path.join(sys.base_prefix, "bin", "python3"))
        else shutil.which("python3") or sys.executable
    )


def _same_base(venv: Path) -> bool:
    """Whether `venv` was made from the interpreter behind the project's venv: a peer in Python (LiteLLM) runs on
    the same interpreter as Tollway, or the comparison measures the interpreters."""
    try:
        cfg = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return False
    homes = [line.partition("=")[2].strip() for line in cfg.splitlines() if line.partition("=")[0].strip() == "home"]
    base = os.path.dirname(_base_python())
    return bool(homes) and os.path.realpath(homes[0]) == os.path.realpath(base)


def _venv(path: Path, packages: list[str], label: str, timeout: float) -> Path:
    stamp = path / (".bench-ok-" + "-".join(p.replace("/", "_") for p in packages).replace(" ", ""))
    python = path / "bin" / "python"
    if stamp.exists() and python.exists() and _same_base(path):
        return python
    _say(f"installing {label} into {path} (first run only; log: {path}.log)")
    log = Path(str(path) + ".log")
    if path.exists():
        shutil.rmtree(path)
    _run([_base_python(), "-m", "venv", str(path)], log, 120)
    _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], log, 300)
    _run([str(python), "-m", "pip", "install", "--quiet", *packages], log, timeout)
    stamp.touch()
    return python


def litellm() -> Path:
    """The `litellm` console script of a dedicated virtualenv."""
    python = _venv(
        cache_dir() / "litellm-venv",
        [f"litellm[proxy]=={LITELLM_VERSION}"],
        f"LiteLLM proxy {LITELLM_VERSION}",
        timeout=900,
    )
    return python.parent / "litellm"


def tools() -> Path:
    """The python of the bench tools venv (matplotlib, py-spy)."""
    return _venv(cache_dir() / "tools-venv", TOOLS, "bench tools (matplotlib, py-spy)", timeout=600)


def portkey() -> Path:
    """Portkey's start-server.js, installed with npm and @hono/node-server pinned by an override."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        raise InstallError("node and npm are needed for the Portkey gateway (apt-get install nodejs npm)")
    root = cache_dir() / f"portkey-{PORTKEY_VERSION}"
    entry = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = root / ".bench-ok"
    if stamp.exists() and entry.exists():
        return entry
    _say(f"installing Portkey gateway {PORTKEY_VERSION} with npm into {root} (first run only; log: {root}.log)")
    root.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "tollway-bench-portkey",
        "private": True,
        "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
        "overrides": {"@hono/node-server": HONO_NODE_SERVER},
    }
    (root / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], Path(str(root) + ".log"), 900, cwd=root)
    if not entry.exists():
        raise InstallError(f"npm install finished but {entry} is missing")
    stamp.touch()
    return entry


def apt_binary(binary: str, package: str) -> str:
    """A binary from Debian's packages, installed with apt-get when missing (root or sudo)."""
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if found:
        return found
    if not shutil.which("apt-get"):
        raise InstallError(f"{binary} is missing and apt-get is not available: install {package}")
    _say(f"installing {package} from Debian's packages (first run only)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log = cache_dir() / "apt.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*sudo, "apt-get", "update", "-qq"], log, 300, env=env)
    _run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package], log, 600, env=env)
    # Debian's packages may start a system service; the benchmark runs its own instances on free ports.
    subprocess.run([*sudo, "service", package.split("-")[0], "stop"], capture_output=True, check=False)
    found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if not found:
        raise InstallError(f"apt-get installed {package} but {binary} is not on PATH")
    return found


if __name__ == "__main__":  # python bench/peers.py: install (or check) everything, e.g. ahead of a run
    for name, fn in (("litellm", litellm), ("portkey", portkey), ("tools", tools)):
        try:
            print(name, fn())
        except InstallError as exc:
            print(name, "FAILED:", exc)
