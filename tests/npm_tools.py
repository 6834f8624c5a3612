"""Command-line clients from npm (Claude Code, Codex CLI), installed once into a versioned cache outside the repo.

Tests run the real clients against the gateway. The first use installs the pinned version into
`${TOLLWAY_CACHE:-~/.cache/tollway}/npm/<package>-<version>/` and says so; later runs reuse it. Without npm the
test is skipped on a developer machine and fails under CI, so a green CI run always ran the client.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("TOLLWAY_CACHE") or Path.home() / ".cache" / "tollway") / "npm"


def npm_tool(package: str, version: str, binary: str) -> Path:
    """The path of `binary` from `package@version`, installing it on first use."""
    directory = CACHE / f"{package.replace('/', '+')}-{version}"
    path = directory / "node_modules" / ".bin" / binary
    if path.exists():
        return path
    npm = shutil.which("npm")
    if npm is None:
        message = f"npm is not installed, so {package} cannot be installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(f"NOT CHECKED: {message}")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:  # parallel test runs install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            print(f"\n>> installing {package}@{version} into {directory} (first run only)", file=sys.stderr)
            result = subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                    str(directory),
                    f"{package}@{version}",
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if result.returncode != 0 or not path.exists():
                pytest.fail(f"npm install {package}@{version} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return path
