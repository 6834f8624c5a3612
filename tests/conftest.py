"""Shared fixtures: a real mock LLM and a real gateway, each on its own loopback socket."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import tollway_mock
from aiohttp import web
from tollway_cli.crsource import CRDirectorySource
from tollway_dataplane.server import RunningGateway, ServerOptions


@dataclass
class MockLLM:
    url: str  # http://127.0.0.1:PORT
    session: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def script(self, behaviour: dict[str, Any], *, times: int = 1, **match: str) -> None:
        body = {"match": match, "times": times, "behaviour": behaviour}
        async with self.session.post(f"{self.url}/__mock/script", json=body) as response:
            assert response.status < 300, await response.text()

    async def requests(self) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.url}/__mock/requests") as response:
            return await response.json()  # type: ignore[no-any-return]

    async def reset(self) -> None:
        await self.session.delete(f"{self.url}/__mock/requests")
        await self.session.delete(f"{self.url}/__mock/script")


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
async def mock_llm() -> AsyncIterator[MockLLM]:
    runner, port = await start_app(tollway_mock.create_app())
    async with aiohttp.ClientSession() as session:
        yield MockLLM(f"http://127.0.0.1:{port}", session)
    await runner.cleanup()


def quickstart_crs(upstream: str, extra: str = "") -> dict[str, str]:
    """A small, realistic CR set: one pool with two keys, two consumers, one route with exact and glob models."""
    return {
        "pool.yaml": f"""
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {{name: mock, namespace: default}}
            spec:
              provider: openai-compatible
              baseURL: {upstream}/v1
              keys: [{{secretRef: {{name: upstream-keys}}}}]
              timeouts: {{connect: 2s, firstByte: 5s, idle: 5s}}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {{name: upstream-keys, namespace: default}}
            stringData: {{key-a: upstream-key-a, key-b: upstream-key-b}}
        """,
        "consumers.yaml": """
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {name: alice, namespace: default, labels: {tier: gold}}
            spec: {credentials: [{secretRef: {name: alice-key}}]}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {name: bob, namespace: default, labels: {tier: free}}
            spec: {credentials: [{secretRef: {name: bob-key}}]}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: Consumer
            metadata: {name: carol, namespace: default}
            spec:
              credentials: [{secretRef: {name: carol-key}}]
              sourceIPs: [10.99.0.0/16]
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: alice-key, namespace: default}
            stringData: {apiKey: sk-alice}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: bob-key, namespace: default}
            stringData: {apiKey: sk-bob}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: carol-key, namespace: default}
            stringData: {apiKey: sk-carol}
        """,
        "routes.yaml": """
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: chat, namespace: default}
            spec:
              rules:
                - models: [mock-gpt, "mock-*"]
                  backends: [{pool: mock}]
                - models: [renamed]
                  backends: [{pool: mock, model: upstream-name}]
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: gold-only, namespace: default}
            spec:
              rules:
                - models: [premium]
                  backends: [{pool: mock}]
              access: {consumerSelector: {matchLabels: {tier: gold}}}
        """
        + extra,
    }


def write_crs(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))


@dataclass
class GatewayHandle:
    running: RunningGateway
    crs: Path
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    def write(self, files: dict[str, str]) -> None:
        write_crs(self.crs, files)

    async def reload(self) -> bool:
        """Apply file changes now; True when a new snapshot went live (by this call or the watcher's own poll)."""
        before = self.running.gateway.snapshot
        await self.running.reloader.load_once()
        return self.running.gateway.snapshot is not before

    def post(self, path: str, body: Any = None, key: str | None = "sk-alice", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if body is not None and not isinstance(body, bytes | str):
            kwargs["json"] = body
        elif body is not None:
            kwargs["data"] = body
        return self.session.post(self.url + path, headers=headers, **kwargs)

    def get(self, path: str, key: str | None = "sk-alice", **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.session.get(self.url + path, headers=headers, **kwargs)


GatewayFactory = Callable[..., Awaitable[GatewayHandle]]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    started: list[tuple[RunningGateway, aiohttp.ClientSession]] = []

    async def make(files: dict[str, str], **options: Any) -> GatewayHandle:
        crs = tmp_path / f"crs-{len(started)}"
        write_crs(crs, files)
        settings: dict[str, Any] = {"port": 0, "metrics_port": 0, "reload_interval": 3600, "drain_delay": 0}
        opts = ServerOptions(**(settings | options))
        running = RunningGateway(CRDirectorySource([crs]), opts)
        await running.start()
        session = aiohttp.ClientSession()
        started.append((running, session))
        return GatewayHandle(running, crs, session)

    yield make
    for running, session in started:
        await session.close()
        await running.close()


@pytest.fixture
async def gateway(make_gateway: GatewayFactory, mock_llm: MockLLM) -> GatewayHandle:
    return await make_gateway(quickstart_crs(mock_llm.url))


async def read_sse(response: aiohttp.ClientResponse) -> list[bytes]:
    """Every `data:` payload of a stream, in order."""
    payloads = []
    async for line in response.content:
        if line.startswith(b"data:"):
            payloads.append(line[5:].strip())
    return payloads


def run_soon(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    return asyncio.ensure_future(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ROOT = Path(__file__).resolve().parent.parent


async def spawn_gateway(
    crs: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """`tollway run` as a real process (with `env` added to its environment); returns once /readyz answers 200."""
    import sys

    port = free_port()
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("dataplane", "operator", "cli")),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tollway_cli",
        "run",
        "--crs",
        str(crs),
        "--port",
        str(port),
        "--metrics-port",
        "0",
        "--no-access-log",
        *args,
        env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return process, url
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise RuntimeError("the gateway process did not become ready")


class RedisServer:
    """A real redis-server on a free loopback port, without persistence; can be stopped and started again."""

    def __init__(self, directory: Path):
        import shutil

        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (make test installs it: scripts/ensure-redis.sh)"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(f"NOT CHECKED: {message}")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def count_pipelines(pipeline: Any) -> list[int]:
    """Record how many commands each pipeline a `TurnPipeline` sends carries (its sends still go to Redis)."""
    sent: list[int] = []
    run = pipeline._run

    async def counting(commands: list[tuple[object, ...]]) -> list[object]:
        sent.append(len(commands))
        result: list[object] = await run(commands)
        return result

    pipeline._run = counting
    return sent
