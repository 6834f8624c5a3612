"""The `tollway` command: run (data plane), render (compile CRs offline), mock (a mock LLM), operator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tollway_dataplane.redisconn import RedisOptions


def _run(args: argparse.Namespace) -> int:
    from tollway_dataplane.server import ServerOptions, run
    from tollway_dataplane.sources import ConfigSource, FileSource

    from . import logs
    from .crsource import CRDirectorySource

    logs.setup(args.log_level, access_log=not args.no_access_log)
    source: ConfigSource
    if args.crs:
        source = CRDirectorySource([Path(p) for p in args.crs])
    elif args.config:
        source = FileSource(Path(args.config), Path(args.secrets) if args.secrets else None)
    elif args.kube_configmap:
        from tollway_dataplane.kubesource import KubeSource

        namespace, _, name = args.kube_configmap.partition("/")
        if not namespace or not name:
            print("tollway run: --kube-configmap takes NAMESPACE/NAME", file=sys.stderr)
            return 2
        try:
            source = KubeSource(namespace, name, args.kube_secret, kubeconfig=args.kubeconfig)
        except Exception as exc:  # the client's config loaders raise several kinds
            print(f"tollway run: cannot load Kubernetes credentials: {exc}", file=sys.stderr)
            return 2
    else:
        print("tollway run: give --crs DIR, --config FILE or --kube-configmap NAMESPACE/NAME", file=sys.stderr)
        return 2
    try:
        redis = _redis_options(args)
    except (OSError, ValueError) as exc:
        print(f"tollway run: {exc}", file=sys.stderr)
        return 2
    options = ServerOptions(
        host=args.host,
        port=args.port,
        metrics_port=None if args.metrics_port == 0 else args.metrics_port,
        reload_interval=args.reload_interval,
        drain_delay=args.drain_delay,
        grace_period=args.grace_period,
        redis=redis,
        consumer_label=args.metrics_consumer_label,
        log_text=args.log_prompts,
        log_text_limit=args.log_text_limit,
        max_body_bytes=args.max_body_bytes,
        cache_max_bytes=args.cache_max_bytes,
        responses_ttl=args.responses_ttl,
    )
    return run(source, options)


def _size(text: str) -> int:
    from tollway_contract.reader import parse_size

    value = parse_size(text if not text.isdigit() else int(text))
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 268435456 or 256Mi")
    return value


def _duration(text: str) -> float:
    from tollway_operator.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _redis_options(args: argparse.Namespace) -> RedisOptions | None:
    """Shared state from the --redis-* flags: a URL (redis://, rediss://, redis+sentinel://), or sentinels."""
    from tollway_dataplane.redisconn import options_from_url, parse_sentinels

    if not args.redis_url and not args.redis_sentinel:
        return None
    settings: dict[str, object] = {
        "username": args.redis_username,
        "password": _redis_password(args.redis_password_file),
        "ca_file": args.redis_ca_file,
        "client_cert": args.redis_client_cert,
        "client_key": args.redis_client_key,
        "cluster": args.redis_cluster,
        "timeout": args.redis_timeout,
        "connect_timeout": args.redis_timeout,
    }
    if args.redis_sentinel:
        if not args.redis_sentinel_master:
            raise ValueError("--redis-sentinel needs --redis-sentinel-master NAME")
        settings |= {"sentinels": parse_sentinels(args.redis_sentinel), "sentinel_master": args.redis_sentinel_master}
    if bool(args.redis_client_cert) != bool(args.redis_client_key):
        raise ValueError("--redis-client-cert and --redis-client-key go together")
    options = options_from_url(args.redis_url or "redis://", **{k: v for k, v in settings.items() if v is not None})
    if options.cluster and options.sentinels:
        raise ValueError("--redis-cluster and Sentinel are different topologies; give one")
    for path in (options.ca_file, options.client_cert, options.client_key):
        if path is not None:
            Path(path).read_bytes()  # fail at start-up, with the path, rather than on the first request
    return options


def _redis_password(path: str | None) -> str | None:
    """From a mounted Secret file, else the environment; never from the command line (it shows in `ps`)."""
    if path:
        return Path(path).read_text().strip() or None
    return os.environ.get("TOLLWAY_REDIS_PASSWORD") or None


def _render(args: argparse.Namespace) -> int:
    from tollway_operator.render import render

    return render([Path(p) for p in args.paths], show_secrets=args.show_secrets, output=args.output)


def _operator(args: argparse.Namespace) -> int:
    from tollway_operator.main import run
    from tollway_operator.options import OperatorOptions

    from . import logs

    try:
        options = OperatorOptions(
            namespaces=tuple(args.namespace or ()),
            all_namespaces=args.all_namespaces,
            target_namespace=args.target_namespace or "",
            configmap=args.configmap,
            secret=args.secret or "",
            debounce=args.debounce,
            max_delay=max(args.max_delay, args.debounce),
            peering=args.peering,
            priority=args.priority,
            kubeconfig=args.kubeconfig,
            max_object_bytes=args.max_object_bytes,
            resync=args.resync,
            liveness=args.liveness,
            readiness=args.readiness,
            log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"tollway operator: {exc}", file=sys.stderr)
        return 2
    logs.setup(options.log_level, access_log=False)
    return run(options)


def _mock(args: argparse.Namespace) -> int:
    import tollway_mock

    return tollway_mock.run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated options: `--redis-password SECRET` would be read as --redis-password-file and the error
    # would print the "path", which is the password.
    parser = argparse.ArgumentParser(prog="tollway", description="Tollway AI gateway", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", allow_abbrev=False, help="run the data plane")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--crs", action="append", metavar="DIR", help="custom resource YAML files or directories")
    source.add_argument("--config", metavar="FILE", help="a rendered config file (JSON or YAML)")
    source.add_argument(
        "--kube-configmap", metavar="NAMESPACE/NAME", help="watch the operator's rendered ConfigMap through the API"
    )
    run.add_argument("--secrets", metavar="FILE", help="the provider-keys document that goes with --config")
    run.add_argument(
        "--kube-secret", metavar="NAME", help="the provider-keys Secret (default: derived from the ConfigMap name)"
    )
    run.add_argument("--kubeconfig", metavar="PATH", help="default: in-cluster, else KUBECONFIG or ~/.kube/config")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8080)
    run.add_argument("--metrics-port", type=int, default=9464, help="0 disables the metrics listener")
    run.add_argument("--reload-interval", type=float, default=0.5, help="seconds between config change checks")
    run.add_argument("--drain-delay", type=float, default=2.0, help="seconds not-ready before closing the listener")
    run.add_argument("--grace-period", type=float, default=60.0, help="seconds in-flight requests may take on stop")
    redis = run.add_argument_group("shared state in Redis (default: in-process, one replica)")
    redis.add_argument(
        "--redis-url",
        default=os.environ.get("TOLLWAY_REDIS_URL"),
        help="redis://[user@]host:port/db, rediss:// (TLS) or redis+sentinel://H:P,H:P/MASTER/db",
    )
    redis.add_argument("--redis-username", metavar="USER", help="ACL user (or in the URL)")
    redis.add_argument(
        "--redis-password-file", metavar="FILE", help="file holding the Redis password (or set TOLLWAY_REDIS_PASSWORD)"
    )
    redis.add_argument("--redis-ca-file", metavar="PEM", help="rediss://: CA that signed the server certificate")
    redis.add_argument("--redis-client-cert", metavar="PEM", help="rediss://: client certificate")
    redis.add_argument("--redis-client-key", metavar="PEM", help="rediss://: the client certificate's key")
    redis.add_argument(
        "--redis-sentinel", metavar="HOST:PORT,...", help="Sentinel mode: the sentinels (the URL gives scheme and db)"
    )
    redis.add_argument("--redis-sentinel-master", metavar="NAME", help="Sentinel mode: the monitored master's name")
    redis.add_argument("--redis-cluster", action="store_true", help="Redis Cluster: the URL names any one node")
    redis.add_argument("--redis-timeout", type=float, default=0.5, help="seconds a Redis call may take (%(default)s)")
    run.add_argument(
        "--metrics-consumer-label",
        default="on",
        metavar="on|off|cap:N",
        help="consumer label on metrics: on, off, or capped at N distinct consumers (the rest are 'other')",
    )
    run.add_argument(
        "--log-prompts", action="store_true", help="put prompt and completion text in the access log (redacted)"
    )
    run.add_argument("--log-text-limit", type=int, default=2000, help="characters of prompt/completion to keep")
    run.add_argument(
        "--max-body-bytes", type=int, default=None, help="request body limit in bytes (default 10 MiB); over it: 413"
    )
    run.add_argument(
        "--cache-max-bytes",
        type=_size,
        default=256 * 1024 * 1024,
        metavar="BYTES",
        help="bound of the in-process response cache (e.g. 256Mi; without Redis)",
    )
    run.add_argument(
        "--responses-ttl",
        type=_duration,
        default="1h",
        metavar="DURATION",
        help="how long /v1/responses answers are kept for previous_response_id and GET (default 1h)",
    )
    run.add_argument("--log-level", default="info")
    run.add_argument("--no-access-log", action="store_true")
    run.set_defaults(func=_run)

    render = sub.add_parser("render", allow_abbrev=False, help="compile custom resource files and print the config")
    render.add_argument("paths", nargs="+", metavar="PATH")
    render.add_argument("--show-secrets", action="store_true", help="print provider keys instead of redacting them")
    render.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml")
    render.set_defaults(func=_render)

    operator = sub.add_parser(
        "operator", allow_abbrev=False, help="run the operator: compile the CRs into the data plane's config"
    )
    watched = operator.add_mutually_exclusive_group(required=True)
    watched.add_argument("--namespace", "-n", action="append", metavar="NS", help="a namespace to watch (repeatable)")
    watched.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    operator.add_argument(
        "--target-namespace", metavar="NS", help="where the ConfigMap and Secret go (default: first --namespace)"
    )
    operator.add_argument("--configmap", default="tollway-config", metavar="NAME", help="default: %(default)s")
    operator.add_argument("--secret", metavar="NAME", help="provider-keys Secret (default: tollway-provider-keys)")
    operator.add_argument("--debounce", type=float, default=0.2, help="quiet seconds before a render (%(default)s)")
    operator.add_argument("--max-delay", type=float, default=2.0, help="render at least this often under churn")
    operator.add_argument(
        "--peering", metavar="NAME", help="enable kopf peering (several replicas, one active); default: standalone"
    )
    operator.add_argument(
        "--priority", type=int, help="kopf peering priority (default with --peering: random, so replicas never tie)"
    )
    operator.add_argument("--kubeconfig", metavar="PATH", help="default: in-cluster, else KUBECONFIG or ~/.kube/config")
    operator.add_argument(
        "--max-object-bytes", type=int, default=900 * 1024, help="shard rendered documents above this size"
    )
    operator.add_argument("--resync", type=float, default=300.0, help="seconds between drift-repairing re-renders")
    operator.add_argument("--liveness", metavar="URL", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    operator.add_argument(
        "--readiness", metavar="URL", help="readiness endpoint (ready once the first render is published)"
    )
    operator.add_argument("--log-level", default="info")
    operator.set_defaults(func=_operator)

    mock = sub.add_parser("mock", allow_abbrev=False, help="run a mock LLM server (OpenAI protocol, scriptable)")
    import tollway_mock

    tollway_mock.add_arguments(mock)
    mock.set_defaults(func=_mock)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
