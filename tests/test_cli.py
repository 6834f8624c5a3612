"""The `tollway` command line."""

from __future__ import annotations

import pytest
from tollway_cli.main import build_parser


def test_the_cli_takes_no_abbreviated_options() -> None:
    """An abbreviation would turn `--redis-password SECRET` into --redis-password-file, and its error would print
    the password as a path."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--crs", "x", "--redis-password", "hunter2"])
