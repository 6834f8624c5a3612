"""The reliability tier's shared ground.

* `Stack`: a real gateway process (`tollway run`, access log and prompt capture on, its log kept in a file) in
  front of a real mock LLM process (`tollway mock`), on free ports, configured with every provider protocol, a
  model rewrite, a glob rule and a rate limit keyed on a header, so hostile input reaches every code path.
* `send`: a raw HTTP/1.1 client over a plain socket, so a test can send any bytes at all (the gateway's own HTTP
  parser is under test too), and read the answer however it is framed.
* `check_answer`: the promises every answer keeps, whatever was sent (see docs/reliability.md).
* `figures`: counts a run reports (inputs tried, faults survived, streams kept), collected into the file named by
  TOLLWAY_RELIABILITY_FIGURES so `make reliability-report` can write them into the docs.

Every credential in the stack contains CANARY: an answer or a log line holding that word leaked one.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CANARY = b"CANARY"
CLIENT_KEY = "sk-tollway-CANARY-client-7f3a91"
UPSTREAM_KEY = "upstream-CANARY-key-c2e8d4"
# Names the config knows: the only values the metrics' model label may take (plus the collapsed "other").
CONFIGURED_MODEL_LABELS = {
    "mock-gpt",
    "mock-*",
    "mock-embedding",
    "renamed",
    "upstream-name",
    "claude-*",
    "gemini-*",
    "other",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    path = os.pathsep.join(str(ROOT / d) for d in ("dataplane", "operator", "cli"))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def wait_ready(port: int, process: subprocess.Popen[bytes], what: str, path: bytes = b"/readyz") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        probe = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = send(port, probe, timeout=2, quiet=True)
        if answer is not None and answer.status == 200:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not become ready")


def stack_crs(upstream: str) -> dict[str, str]:
    """Every provider protocol at the mock, a rewrite, globs, embeddings and a rate limit keyed on a header."""
    pools = ""
    for name, provider, base in (
        ("mock", "openai-compatible", f"{upstream}/v1"),
        ("claude", "anthropic", upstream),
        ("gemini", "gemini", upstream),
    ):
        pools += f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: {name}, namespace: default}}
            spec:
              provider: {provider}
              baseURL: {base}
              keys: [{{secretRef: {{name: upstream-keys}}}}]
              timeouts: {{connect: 2s, firstByte: 10s, idle: 10s}}
            ---
        """
    return {
        "pools.yaml": pools
        + f"""
            apiVersion: v1
            kind: Secret
            metadata: {{name: upstream-keys, namespace: default}}
            stringData: {{key-a: {UPSTREAM_KEY}}}
        """,
        "routes.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {{name: fuzz, namespace: default}}
            spec:
              rules:
                - models: [mock-gpt, "mock-*", mock-embedding]
                  backends: [{{pool: mock}}]
                - models: [renamed]
                  backends: [{{pool: mock, model: upstream-name}}]
                - models: ["claude-*"]
                  backends: [{{pool: claude}}]
                - models: ["gemini-*"]
                  backends: [{{pool: gemini}}]
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {{name: fuzzer, namespace: default}}
            spec: {{credentials: [{{secretRef: {{name: fuzzer-key}}}}]}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: fuzzer-key, namespace: default}}
            stringData: {{apiKey: {CLIENT_KEY}}}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: TokenRateLimit
            metadata: {{name: roomy, namespace: default}}
            spec:
              key: header:X-Tenant+consumer
              limits: [{{tokens: 1000000000000, window: 1m}}, {{requests: 1000000000, window: 1m}}]
        """,
    }


@dataclass
class Stack:
    """A mock LLM process and a gateway process in front of it."""

    directory: Path
    gateway_args: tuple[str, ...] = ()
    mock: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    mock_port: int = 0
    port: int = 0
    metrics_port: int = 0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.directory / "gateway.log"

    def start(self) -> Stack:
        self.mock_port = free_port()
        with open(self.directory / "mock.log", "wb") as mock_log:
            self.mock = subprocess.Popen(
                [sys.executable, "-m", "tollway_cli", "mock", "--port", str(self.mock_port)],
                env=_env(),
                stdout=mock_log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.mock_port, self.mock, "the mock LLM", b"/healthz")
        return self

    def start_gateway(self) -> None:
        crs = self.directory / "crs"
        crs.mkdir(exist_ok=True)
        for name, text in stack_crs(f"http://127.0.0.1:{self.mock_port}").items():
            (crs / name).write_text(textwrap.dedent(text))
        self.port, self.metrics_port = free_port(), free_port()
        args = ["--port", str(self.port), "--metrics-port", str(self.metrics_port), "--log-prompts"]
        with open(self.log_path, "wb") as log:
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "tollway_cli", "run", "--crs", str(crs), *args, *self.gateway_args],
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_ready(self.port, self.gateway, "the gateway")

    def alive(self) -> bool:
        return self.gateway is not None and self.gateway.poll() is None

    def rss_kb(self) -> int:
        """The gateway process's resident memory (0 where /proc is not available)."""
        try:
            status = Path(f"/proc/{self.gateway.pid if self.gateway else 0}/status").read_text()
        except OSError:
            return 0
        return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def metrics(self) -> str:
        answer = send(self.metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer is not None and answer.status == 200
        return answer.body.decode()

    def mock_calls(self) -> int:
        """How many requests reached the mock so far (its request ids count up)."""
        answer = send(self.mock_port, b"GET /__mock/requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer is not None and answer.status == 200
        return max((entry["id"] for entry in answer.json()), default=0)

    def stop(self) -> None:
        for process in (self.gateway, self.mock):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start_stack(directory: Path, *gateway_args: str) -> Stack:
    stack = Stack(directory, gateway_args)
    try:
        stack.start()
        stack.start_gateway()
    except BaseException:
        stack.stop()
        raise
    return stack


# -- a raw HTTP/1.1 client ------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, values as latin-1 text (the bytes, one char each)
    body: bytes
    raw: bytes  # everything received, status line and headers included

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def request_bytes(
    method: str | bytes,
    path: str | bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    def b(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("latin-1")

    lines = [b(method) + b" " + b(path) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers]
    if content_length and (body or b(method) in (b"POST", b"PUT", b"PATCH")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def send(port: int, data: bytes, *, timeout: float = 30.0, quiet: bool = False, head: bool = False) -> Answer | None:
    """Send `data` as it is and read one answer (None when the connection failed and `quiet` is set)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            # The server may answer and close before reading everything (a rejected header).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            return _read_answer(sock, head)
    except (ConnectionRefusedError, ConnectionResetError, TimeoutError):
        if quiet:
            return None
        raise


def _read_answer(sock: socket.socket, head: bool) -> Answer:
    received = bytearray()

    def more() -> bool:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        received.extend(chunk)
        return bool(chunk)

    while b"\r\n\r\n" not in received:
        if not more():
            raise AssertionError(f"connection closed before a complete answer: {bytes(received[:200])!r}")
    end = received.index(b"\r\n\r\n")
    lines = bytes(received[:end]).split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
    names = dict(headers)
    start = end + 4
    if head or status in (204, 304) or 100 <= status < 200:
        body = b""
    elif "chunked" in names.get("transfer-encoding", "").lower():
        body, position = bytearray(), start
        while True:
            while b"\r\n" not in received[position:]:
                if not more():
                    raise AssertionError("chunked answer cut short")
            line_end = received.index(b"\r\n", position)
            size = int(bytes(received[position:line_end]).split(b";")[0], 16)
            while len(received) < line_end + 2 + size + 2:
                if not more():
                    raise AssertionError("chunked answer cut short")
            body += received[line_end + 2 : line_end + 2 + size]
            position = line_end + 2 + size + 2
            if size == 0:
                break
        body = bytes(body)
    elif "content-length" in names:
        length = int(names["content-length"])
        while len(received) < start + length:
            if not more():
                raise AssertionError("answer shorter than its Content-Length")
        body = bytes(received[start : start + length])
    else:
        while more():
            pass
        body = bytes(received[start:])
    return Answer(status, headers, body, bytes(received))


# -- what every answer promises -----------------------------------------------------------------------------


def check_answer(answer: Answer | None, *, path: bytes | str = b"", head: bool = False) -> None:
    """No 5xx, every error is JSON with `error.message` (Anthropic shape on /messages), nothing echoes a key,
    no answer names the server software."""
    assert answer is not None, "no answer"
    assert CANARY not in answer.raw, f"a credential came back: {answer.raw[:300]!r}"
    assert answer.status < 500, f"{answer.status}: {answer.body[:300]!r}"
    assert answer.header("server") is None, answer.header("server")
    if head:
        return
    content_type = answer.header("content-type") or ""
    if answer.status >= 400:
        assert content_type.startswith("application/json"), (answer.status, content_type, answer.body[:200])
        body = answer.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
        assert isinstance(body["error"].get("message"), str) and body["error"]["message"], body
        target = path if isinstance(path, bytes) else path.encode("latin-1")
        if target.split(b"?")[0].endswith(b"/messages") and "x-request-id" in dict(answer.headers):
            # The Anthropic entry's own errors (the HTTP layer's answers have this shape too).
            assert body.get("type") == "error" and isinstance(body["error"].get("type"), str), body
    elif answer.status == 200:
        if content_type.startswith("application/json"):
            answer.json()
        elif content_type.startswith("text/event-stream"):
            for line in answer.body.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    json.loads(line[5:])


def check_log(stack: Stack) -> None:
    """The gateway's log has no credential and no crash."""
    text = stack.log()
    assert CANARY not in text, "a credential reached the log"
    for marker in (b"Traceback", b"unhandled error", b"unexpected error"):
        assert marker not in text, text[text.index(marker) - 300 : text.index(marker) + 1500].decode("utf-8", "replace")


def model_label_values(metrics_text: str) -> set[str]:
    values = set()
    for line in metrics_text.splitlines():
        if line.startswith("tollway_") and 'model="' in line:
            values.add(line.split('model="', 1)[1].split('"', 1)[0])
    return values


# -- figures ------------------------------------------------------------------------------------------------


class Figures:
    """Counts for the docs' figures section; appended as JSON lines to TOLLWAY_RELIABILITY_FIGURES when set."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def set(self, name: str, value: int) -> None:
        self.counts[name] = value

    def flush(self, scope: str) -> None:
        target = os.environ.get("TOLLWAY_RELIABILITY_FIGURES")
        if target and self.counts:
            with open(target, "a") as out:
                out.write(json.dumps({"scope": scope, "counts": dict(self.counts)}) + "\n")
        self.counts.clear()


figures = Figures()
