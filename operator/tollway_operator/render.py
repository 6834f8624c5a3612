"""`tollway render`: compile custom resource files offline and print the config, keys redacted by default."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import yaml
from tollway_contract.dump import config_to_dict, secrets_to_dict

from .compiler import compile_crs, load_documents


def render(paths: list[Path], *, show_secrets: bool = False, output: str = "yaml") -> int:
    try:
        result = compile_crs(load_documents(paths))
    except ValueError as exc:
        print(f"tollway render: {exc}", file=sys.stderr)
        return 1
    document = {
        "config": config_to_dict(result.config),
        "secrets": secrets_to_dict(result.secrets, redact=not show_secrets),
    }
    if output == "json":
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    failed = False
    for ref, status in sorted(result.statuses.items()):
        for condition in status.conditions():
            if condition.status != "True" or condition.reason == "AcceptedWithWarnings":
                failed = failed or condition.status != "True"
                print(
                    f"{ref}: {condition.type}={condition.status} ({condition.reason}): {condition.message}",
                    file=sys.stderr,
                )
    for note in result.ignored:
        print(f"ignored: {note}", file=sys.stderr)
    return 1 if failed else 0
