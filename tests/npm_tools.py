"""Real clients from npm (Claude Code, Codex CLI) for the tests, installed by scripts/ensure-clients.sh.

`make test` runs the script first, so an install shows on screen; a test that finds its client missing runs it
itself. Without npm the test is skipped on a developer machine and fails under CI, so a green CI run always ran
the client.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-clients.sh"


def client_binary(name: str) -> Path:
    """The pinned client's executable (`claude`, `codex`)."""
    done = subprocess.run([str(SCRIPT), name], capture_output=True, text=True, timeout=900)
    for line in done.stdout.splitlines():
        found, _, path = line.partition(" ")
        if done.returncode == 0 and found == name and Path(path).exists():
            return Path(path)
    problem = f"the {name} client is not installed and could not be: {done.stderr.strip()[-800:]}"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(f"NOT CHECKED: {problem}")
