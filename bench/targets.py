"""The things under test: the shared upstreams on the load core (nginx `return 200`, the SSE server, Redis)
and each row's gateway started against them (direct, nginx proxy_pass, Tollway and its RESP-client baseline,
LiteLLM, Portkey), with the Tollway CR set and the versions each row reports."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a directory of scripts, not a package
import peers
from harness import BENCH, GATEWAY_CORE, LOAD_CORE, PROCS, REPO, free_port, say, tail, wait_ready

UPSTREAM_KEY = "sk-bench-upstream"
JSON_MODEL = "bench-gpt"
STREAM_MODEL = "bench-stream"

CHAT_REPLY = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": JSON_MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The sea is wide, deep and always moving."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 24, "completion_tokens": 10, "total_tokens": 34},
    "system_fingerprint": None,
}

TARGETS = [
    "direct",
    "nginx",
    "tollway",
    "tollway-stages",
    "tollway-before",
    "tollway-stages-before",
    "tollway-resp",
    "litellm",
    "portkey",
]
DEFAULT_ROWS = ["nginx", "tollway", "tollway-stages", "litellm", "portkey"]  # the others are asked for by name


@dataclass
class Endpoint:
    url: str  # the full chat-completions URL
    headers: dict[str, str]
    model: str
    pid: int  # whose CPU and RSS are measured
    vary: bool = False  # every request asks something new (a response cache on the route always misses)


@dataclass
class Target:
    name: str
    label: str
    json: Endpoint | None = None
    stream: Endpoint | None = None
    proc: subprocess.Popen | None = None
    notes: list[str] = field(default_factory=list)
    version: str = ""


class Testbed:
    """The upstreams, Redis and the tools, started once per run, and a `start_<row>` method per row."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.wrk_bin = ""
        self.nginx = ""
        self.before = ""  # the commit of the tollway-before row (--before)
        self.upstream_port = 0
        self.sse_port = 0
        self.redis_port = 0
        self.upstream: subprocess.Popen | None = None
        self.sse: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None

    # -- shared services on the load core ---------------------------------------------------------------------

    def start_services(self) -> None:
        self.nginx = peers.apt_binary("nginx", "nginx-light")
        self.wrk_bin = peers.apt_binary("wrk", "wrk")
        redis_server = peers.apt_binary("redis-server", "redis-server")

        self.upstream_port = free_port()
        conf = self._nginx_conf(
            "upstream",
            f"""
            server {{
                listen 127.0.0.1:{self.upstream_port} backlog=4096;
                location / {{
                    default_type application/json;
                    return 200 '{json.dumps(CHAT_REPLY, separators=(",", ":"))}';
                }}
            }}""",
            access_log="off",
        )
        log = self.tmp / "upstream-nginx.log"
        self.upstream = PROCS.start("nginx upstream", self._nginx_cmd(conf), LOAD_CORE, log)
        wait_ready(f"http://127.0.0.1:{self.upstream_port}/v1/models", self.upstream, log, 10)

        self.sse_port = free_port()
        log = self.tmp / "sse-upstream.log"
        self.sse = PROCS.start(
            "sse upstream",
            [sys.executable, str(BENCH / "sse_upstream.py"), "--port", str(self.sse_port), "--interval", "0.05"],
            LOAD_CORE,
            log,
        )
        wait_ready(f"http://127.0.0.1:{self.sse_port}/v1/models", self.sse, log, 10)

        self.redis_port = free_port()
        rdir = self.tmp / "redis"
        rdir.mkdir()
        log = self.tmp / "redis.log"
        self.redis = PROCS.start(
            "redis",
            [
                redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(rdir),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            LOAD_CORE,
            log,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.redis_ping():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"redis-server did not answer: {tail(log)}")
        say(
            f"upstreams on core {LOAD_CORE}: nginx (1 worker) :{self.upstream_port}, SSE server :{self.sse_port}, "
            f"redis :{self.redis_port}; load generators on core {LOAD_CORE}, each gateway on core {GATEWAY_CORE}"
        )

    def _redis(self, *words: str) -> bytes:
        """One command over RESP on a fresh connection; the reply's payload (status, integer or bulk string)."""
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as sock:
            sock.sendall(b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                data += chunk
            head, _, rest = data.partition(b"\r\n")
            if head[:1] == b"-":
                raise RuntimeError(head[1:].decode(errors="replace"))
            if head[:1] != b"$":
                return head[1:]
            size = int(head[1:])
            while len(rest) < size + 2:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                rest += chunk
            return rest[:size]

    def redis_ping(self) -> bool:
        try:
            return self._redis("PING") == b"PONG"
        except OSError:
            return False

    def redis_evalsha_calls(self) -> int:
        """Script calls Redis has served: the limiter's decisions and settlements."""
        stats = self._redis("INFO", "commandstats").decode(errors="replace")
        return sum(int(m) for m in re.findall(r"cmdstat_(?:evalsha|eval|evalsha_ro|fcall):calls=(\d+)", stats))

    def _nginx_conf(self, name: str, servers: str, access_log: str) -> Path:
        d = self.tmp / f"nginx-{name}"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(
            textwrap.dedent(
                f"""
                worker_processes 1;
                daemon off;
                pid {d}/nginx.pid;
                error_log {d}/error.log warn;
                worker_rlimit_nofile 20000;
                events {{ worker_connections 8192; }}
                http {{
                    access_log {access_log};
                    client_body_temp_path {d}/tmp/body;
                    proxy_temp_path {d}/tmp/proxy;
                    fastcgi_temp_path {d}/tmp/fastcgi;
                    uwsgi_temp_path {d}/tmp/uwsgi;
                    scgi_temp_path {d}/tmp/scgi;
                    keepalive_requests 10000000;
                    keepalive_timeout 300s;
                """
            )
            + textwrap.dedent(servers)
            + "\n}\n"
        )
        return conf

    def _nginx_cmd(self, conf: Path) -> list[str]:
        return [self.nginx, "-p", str(conf.parent), "-e", str(conf.parent / "error.log"), "-c", str(conf)]

    # -- targets -----------------------------------------------------------------------------------------------

    def start_direct(self) -> Target:
        t = Target("direct", "direct to the upstream (the floor)")
        assert self.upstream is not None and self.sse is not None
        auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
        t.json = Endpoint(
            f"http://127.0.0.1:{self.upstream_port}/v1/chat/completions", auth, JSON_MODEL, self.upstream.pid
        )
        t.stream = Endpoint(f"http://127.0.0.1:{self.sse_port}/v1/chat/completions", auth, STREAM_MODEL, self.sse.pid)
        t.version = _nginx_version(self.nginx)
        t.notes.append(
            f"upstreams on core {LOAD_CORE} with the load generator: nginx {t.version} "
            "`return 200` (1 worker) and bench/sse_upstream.py (uvloop); CPU/RSS columns are theirs"
        )
        return t

    def start_nginx_proxy(self) -> Target:
        t = Target("nginx", "nginx proxy_pass (the practical C limit)")
        p_json, p_sse = free_port(), free_port()
        conf = self._nginx_conf(
            "proxy",
            f"""
            upstream json_up {{ server 127.0.0.1:{self.upstream_port}; keepalive 256; }}
            upstream sse_up {{ server 127.0.0.1:{self.sse_port}; keepalive 1024; }}
            server {{
                listen 127.0.0.1:{p_json} backlog=4096;
                location / {{
                    proxy_pass http://json_up;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                }}
            }}
            server {{
                listen 127.0.0.1:{p_sse} backlog=4096;
                location / {{
                    proxy_pass http://sse_up;
                    proxy_http_version 1.1;
                    proxy_set_header Connection "";
                    proxy_buffering off;
                    proxy_read_timeout 300s;
                }}
            }}""",
            access_log=f"{self.tmp}/nginx-proxy/access.log combined buffer=64k flush=1s",
        )
        log = self.tmp / "nginx-proxy.log"
        t.proc = PROCS.start("nginx proxy", self._nginx_cmd(conf), GATEWAY_CORE, log)
        wait_ready(f"http://127.0.0.1:{p_json}/v1/models", t.proc, log, 10, ok=(200, 404, 405))
        auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
        t.json = Endpoint(f"http://127.0.0.1:{p_json}/v1/chat/completions", auth, JSON_MODEL, t.proc.pid)
        t.stream = Endpoint(f"http://127.0.0.1:{p_sse}/v1/chat/completions", auth, STREAM_MODEL, t.proc.pid)
        t.version = _nginx_version(self.nginx)
        t.notes.append(
            "1 worker, keepalive upstreams, proxy_buffering off for streams, access log to a file (64k buffer)"
        )
        return t

    def start_tollway_resp(self) -> Target:
        """The same gateway and config at the baseline commit: the hand-written pipelined RESP client."""
        tree, commit = baseline_tree(self.tmp)
        t = self.start_tollway(tree=tree, name="tollway-resp")
        t.label = f"Tollway {commit} (RESP client)"
        t.notes.append(f"the same row at {commit}, before redis-py: the limiter's hand-written RESP client")
        return t

    def start_tollway_stages(self) -> Target:
        """The same gateway with the stages a careful deployment turns on: a rules-only guardrail on the request
        and the answer (streams through its window) and an exact response cache, every request a miss."""
        t = self.start_tollway(name="tollway-stages", stages=True)
        t.label = "Tollway + guardrail, cache"
        for ep in (t.json, t.stream):
            assert ep is not None
            ep.vary = True
        t.notes.append(
            "the tollway row's config plus a rules guardrail (4 patterns, 3 PII detectors masking, both directions, "
            "stream window 256 characters) and an exact cache (scope consumer); every request's prompt is new, so "
            "each is a cache miss: the key, the lookup, then the answer recorded and stored"
        )
        return t

    def start_tollway_before(self) -> Target:
        """The same row at another commit (`--before`): the before of a change, measured in the same run."""
        if not self.before:
            raise RuntimeError("the tollway-before row needs --before COMMIT")
        tree, commit = commit_tree(self.tmp, self.before)
        t = self.start_tollway(tree=tree, name="tollway-before")
        t.label = f"Tollway at {commit}"
        t.notes.append(f"the tollway row's config on the code at {commit}")
        return t

    def start_tollway_stages_before(self) -> Target:
        """The stages row at another commit (`--before`, with tollway-stages among the rows)."""
        if not self.before:
            raise RuntimeError("the tollway-stages-before row needs --before COMMIT")
        tree, commit = commit_tree(self.tmp, self.before)
        t = self.start_tollway(tree=tree, name="tollway-stages-before", stages=True)
        t.label = f"Tollway + guardrail, cache at {commit}"
        for ep in (t.json, t.stream):
            assert ep is not None
            ep.vary = True
        t.notes.append(f"the tollway-stages row's config on the code at {commit}")
        return t

    def start_tollway(self, tree: Path | None = None, name: str = "tollway", stages: bool = False) -> Target:
        t = Target(name, "Tollway")
        crs = self.tmp / f"{name}-crs"
        crs.mkdir(exist_ok=True)
        api_key = "sk-tollway-bench-" + secrets.token_hex(8)
        (crs / "bench.yaml").write_text(tollway_crs(api_key, self.upstream_port, self.sse_port, stages=stages))
        port, metrics_port = free_port(), free_port()
        log = self.tmp / f"{name}.log"  # its stderr: process log + one JSON access-log line per request
        python = REPO / ".venv" / "bin" / "python"
        if not python.exists():
            raise RuntimeError(f"{python} is missing: run `make install` first")
        # The CLI's module: its own package now, a module of the data plane before the planes were untangled.
        cli = "tollway_cli" if tree is None or (tree / "cli" / "tollway_cli").is_dir() else "tollway_dataplane.cli"
        cmd = [
            str(python),
            "-m",
            cli,
            "run",
            "--crs",
            str(crs),
            "--redis-url",
            f"redis://127.0.0.1:{self.redis_port}/0",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--drain-delay",
            "0",
            "--grace-period",
            "2",
        ]
        env = {"PYTHONPATH": source_path(tree or REPO)}
        t.proc = PROCS.start(name, cmd, GATEWAY_CORE, log, env=env)
        wait_ready(f"http://127.0.0.1:{port}/readyz", t.proc, log, 30)
        auth = {"Authorization": f"Bearer {api_key}"}
        t.json = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", auth, JSON_MODEL, t.proc.pid)
        t.stream = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", auth, STREAM_MODEL, t.proc.pid)
        t.version = _pkg_version("tollway")
        t.label = f"Tollway {t.version}"
        t.notes.append(
            "`tollway run --crs` with consumer auth (3 consumers), model routing (6 rules, 2 pools), a "
            "TokenRateLimit in Redis (tokens+requests per consumer, failurePolicy closed), metrics port on, "
            f"access log on (stderr redirected to a file: {log.name})"
        )
        self._tollway_log = log
        self._tollway_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        return t

    def start_litellm(self) -> Target:
        t = Target("litellm", f"LiteLLM proxy {peers.LITELLM_VERSION}")
        litellm = peers.litellm()
        master_key = "sk-litellm-bench-" + secrets.token_hex(8)
        conf = self.tmp / "litellm.yaml"
        conf.write_text(
            textwrap.dedent(
                f"""
                model_list:
                  - model_name: {JSON_MODEL}
                    litellm_params:
                      model: openai/{JSON_MODEL}
                      api_base: http://127.0.0.1:{self.upstream_port}/v1
                      api_key: {UPSTREAM_KEY}
                  - model_name: {STREAM_MODEL}
                    litellm_params:
                      model: openai/{STREAM_MODEL}
                      api_base: http://127.0.0.1:{self.sse_port}/v1
                      api_key: {UPSTREAM_KEY}
                general_settings:
                  master_key: {master_key}
                """
            )
        )
        port = free_port()
        log = self.tmp / "litellm.log"
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        cmd = [str(litellm), "--config", str(conf), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        t.proc = PROCS.start("litellm", cmd, GATEWAY_CORE, log, env=env, cwd=self.tmp)
        wait_ready(f"http://127.0.0.1:{port}/health/liveliness", t.proc, log, 180)
        auth = {"Authorization": f"Bearer {master_key}"}
        t.json = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", auth, JSON_MODEL, t.proc.pid)
        t.stream = Endpoint(f"http://127.0.0.1:{port}/v1/chat/completions", auth, STREAM_MODEL, t.proc.pid)
        t.version = peers.LITELLM_VERSION
        t.notes.append(
            "`litellm --config` (1 uvicorn worker), master key, no database, "
            "LITELLM_LOCAL_MODEL_COST_MAP=True, default logging to a file"
        )
        return t

    def start_portkey(self) -> Target:
        t = Target("portkey", f"Portkey gateway {peers.PORTKEY_VERSION}")
        entry = peers.portkey()
        node = shutil.which("node") or "node"
        port = free_port()
        log = self.tmp / "portkey.log"
        env = {"TRUSTED_CUSTOM_HOSTS": "127.0.0.1"}  # comma-separated hostnames allowed as x-portkey-custom-host
        t.proc = PROCS.start(
            "portkey", [node, str(entry), f"--port={port}", "--headless"], GATEWAY_CORE, log, env=env, cwd=entry.parent
        )
        wait_ready(f"http://127.0.0.1:{port}/", t.proc, log, 60)

        def headers(upstream_port: int) -> dict[str, str]:
            return {
                "Authorization": f"Bearer {UPSTREAM_KEY}",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
            }

        t.json = Endpoint(
            f"http://127.0.0.1:{port}/v1/chat/completions", headers(self.upstream_port), JSON_MODEL, t.proc.pid
        )
        t.stream = Endpoint(
            f"http://127.0.0.1:{port}/v1/chat/completions", headers(self.sse_port), STREAM_MODEL, t.proc.pid
        )
        t.version = peers.PORTKEY_VERSION
        t.notes.append(
            f"node {_cmd_version([node, '--version'])} start-server.js --headless, "
            f"@hono/node-server {peers.HONO_NODE_SERVER}, provider openai + x-portkey-custom-host, "
            "TRUSTED_CUSTOM_HOSTS=127.0.0.1, console log to a file"
        )
        return t


STAGES = """
guardrails:
  stream: {window: 256}
  checkers:
    - name: prompt-injection
      type: rules
      patterns: ["(?i)ignore (all )?previous instructions", "(?i)system prompt", "BEGIN PRIVATE KEY", "rm -rf /"]
    - name: pii
      type: rules
      action: mask
      detectors: [email, api-key, cn-id-card]  # not credit-card: a stream chunk carries a timestamp in digits
cache: {mode: exact, ttl: 10m, scope: consumer}
"""


def tollway_crs(api_key: str, upstream_port: int, sse_port: int, stages: bool = False) -> str:
    """A realistic Tollway config: 3 consumers, 2 pools, 6 routing rules, a Redis-backed TokenRateLimit; with
    `stages`, a guardrail and a response cache on the route."""
    other_key = "sk-team-b-" + secrets.token_hex(6)
    route_stages = textwrap.indent(STAGES.strip("\n"), " " * 10) + "\n" if stages else ""
    return textwrap.dedent(
        f"""
        apiVersion: v1
        kind: Secret
        metadata: {{name: consumer-keys, namespace: default}}
        stringData: {{bench: {api_key}, team-a: sk-team-a-{secrets.token_hex(6)}, team-b: {other_key}}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {{name: bench, namespace: default, labels: {{tier: bench}}}}
        spec:
          credentials: [{{secretRef: {{name: consumer-keys, key: bench}}}}]
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {{name: team-a, namespace: default, labels: {{tier: internal}}}}
        spec:
          credentials: [{{secretRef: {{name: consumer-keys, key: team-a}}}}]
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {{name: team-b, namespace: default, labels: {{tier: internal}}}}
        spec:
          credentials: [{{secretRef: {{name: consumer-keys, key: team-b}}}}]
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: upstream-keys, namespace: default}}
        stringData: {{key-1: {UPSTREAM_KEY}, key-2: {UPSTREAM_KEY}}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: json-upstream, namespace: default}}
        spec:
          provider: openai-compatible
          baseURL: http://127.0.0.1:{upstream_port}/v1
          keys: [{{secretRef: {{name: upstream-keys}}}}]
          timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: sse-upstream, namespace: default}}
        spec:
          provider: openai-compatible
          baseURL: http://127.0.0.1:{sse_port}/v1
          keys: [{{secretRef: {{name: upstream-keys}}}}]
          timeouts: {{connect: 2s, firstByte: 30s, idle: 30s}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: bench, namespace: default}}
        spec:
          match: {{pathPrefix: /v1}}
{route_stages}          rules:
            - models: ["gpt-4o", "gpt-4o-*"]
              backends: [{{pool: json-upstream, model: {JSON_MODEL}}}]
            - models: ["o3*"]
              backends: [{{pool: json-upstream, model: {JSON_MODEL}}}]
            - models: ["{JSON_MODEL}"]
              backends: [{{pool: json-upstream}}]
            - models: ["{STREAM_MODEL}"]
              backends: [{{pool: sse-upstream}}]
            - models: ["bench-*"]
              backends: [{{pool: json-upstream}}]
            - models: ["embed-*"]
              backends: [{{pool: json-upstream}}]
          access:
            consumers: [bench, team-a, team-b]
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: TokenRateLimit
        metadata: {{name: per-consumer, namespace: default}}
        spec:
          targetRefs: [{{kind: AIRoute, name: bench}}]
          key: consumer
          limits:
            - {{tokens: 100000000000, window: 1m}}
            - {{requests: 1000000000, window: 1m}}
          failurePolicy: closed
          estimate: {{defaultMaxTokens: 256}}
        """
    )


def baseline_tree(tmp: Path) -> tuple[Path, str]:
    """The source just before the limiter moved to redis-py (the parent of the commit that added
    redisconn.py), unpacked from git: the "before" the limiter figures are compared with."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "dataplane/tollway_dataplane/redisconn.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise RuntimeError("no commit adds dataplane/tollway_dataplane/redisconn.py: no baseline to compare with")
    return commit_tree(tmp, f"{added[-1]}^")


def commit_tree(tmp: Path, revision: str) -> tuple[Path, str]:
    """The gateway's source at a commit, unpacked from git into the run's temp dir."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", revision], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = tmp / f"tree-{commit}"
    if not tree.exists():
        tree.mkdir()
        # The source directories that commit has: the CLI got a package of its own later than some commits worth
        # comparing with (f71dedb, the start of the performance work, has only dataplane and operator).
        present = subprocess.run(
            ["git", "ls-tree", "--name-only", commit], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        wanted = [d for d in ("dataplane", "cli", "operator") if d in present]
        archive = subprocess.run(["git", "archive", commit, *wanted], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, commit


def source_path(tree: Path) -> str:
    return os.pathsep.join(str(tree / d) for d in ("dataplane", "operator", "cli"))


def _pkg_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _cmd_version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def _nginx_version(nginx: str) -> str:
    v = _cmd_version([nginx, "-v"])
    return v.split("/")[-1] if "/" in v else v
