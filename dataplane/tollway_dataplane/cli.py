"""The `tollway` command: run (data plane), render (compile CRs offline), mock (a mock LLM), operator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from . import logs
    from .server import ServerOptions, run
    from .sources import ConfigSource, CRDirectorySource, FileSource

    logs.setup(args.log_level, access_log=not args.no_access_log)
    source: ConfigSource
    if args.crs:
        source = CRDirectorySource([Path(p) for p in args.crs])
    elif args.config:
        source = FileSource(Path(args.config), Path(args.secrets) if args.secrets else None)
    else:
        print("tollway run: give --crs DIR or --config FILE", file=sys.stderr)
        return 2
    options = ServerOptions(
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port == 0 else args.metrics_port,
        reload_interval=args.reload_interval,
        drain_delay=args.drain_delay,
        grace_period=args.grace_period,
        redis_url=args.redis_url,
        redis_password=_redis_password(args.redis_password_file),
    )
    return run(source, options)


def _redis_password(path: str | None) -> str | None:
    """From a mounted Secret file, else the environment; never from the command line (it shows in `ps`)."""
    if path:
        return Path(path).read_text().strip() or None
    return os.environ.get("TOLLWAY_REDIS_PASSWORD") or None


def _render(args: argparse.Namespace) -> int:
    from tollway_operator.render import render

    return render([Path(p) for p in args.paths], show_secrets=args.show_secrets, output=args.output)


def _mock(args: argparse.Namespace) -> int:
    import tollway_mock

    return tollway_mock.run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollway", description="Tollway AI gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the data plane")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--crs", action="append", metavar="DIR", help="custom resource YAML files or directories")
    source.add_argument("--config", metavar="FILE", help="a rendered config file (JSON or YAML)")
    run.add_argument("--secrets", metavar="FILE", help="the provider-keys document that goes with --config")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--metrics-port", type=int, default=9464, help="0 disables the metrics listener")
    run.add_argument("--reload-interval", type=float, default=0.5, help="seconds between config change checks")
    run.add_argument("--drain-delay", type=float, default=2.0, help="seconds not-ready before closing the listener")
    run.add_argument("--grace-period", type=float, default=60.0, help="seconds in-flight requests may take on stop")
    run.add_argument(
        "--redis-url",
        default=os.environ.get("TOLLWAY_REDIS_URL"),
        help="redis://host:port/db for limits shared by every replica (default: in-process)",
    )
    run.add_argument(
        "--redis-password-file", metavar="FILE", help="file holding the Redis password (or set TOLLWAY_REDIS_PASSWORD)"
    )
    run.add_argument("--log-level", default="info")
    run.add_argument("--no-access-log", action="store_true")
    run.set_defaults(func=_run)

    render = sub.add_parser("render", help="compile custom resource files and print the config")
    render.add_argument("paths", nargs="+", metavar="PATH")
    render.add_argument("--show-secrets", action="store_true", help="print provider keys instead of redacting them")
    render.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml")
    render.set_defaults(func=_render)

    mock = sub.add_parser("mock", help="run a mock LLM server (OpenAI protocol, scriptable)")
    import tollway_mock

    tollway_mock.add_arguments(mock)
    mock.set_defaults(func=_mock)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
