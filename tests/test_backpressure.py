"""Back-pressure on streams: a caller that reads slowly never makes the gateway buffer what the upstream sends.

The upstream here streams OpenAI chunks as fast as its socket takes them (up to 200 MB); the caller reads 1 KB a
second. If the gateway kept reading the upstream while the caller's send buffer was full, the upstream would
finish in well under a second and the gateway's memory would hold the difference. With back-pressure the
gateway stops reading, the kernel's buffers fill, and the upstream's writes wait: what it managed to send is
bounded by socket buffers (the kernel's, tens of MB at most on loopback with autotuning, plus the gateway's
256 KB high-water mark), and so is the gateway's RSS. When the caller hangs up, the upstream call is cancelled.

Three ways through the relay: a plain route (events pushed from the upstream's callback to the caller), a route
with a rules guardrail (the same, through the filter chain) and the Responses API (whose filter may wait on its
store, so the relay's coroutine pulls the stream: the upstream connection stops reading while the pulled bytes
wait to be written).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from conftest import spawn_gateway, start_app, write_crs
from fixtures.providers.support import provider_crs

OFFERED = 200 * 1024 * 1024
CHUNK_TEXT = "x" * 1000


class FastUpstream:
    """An OpenAI-compatible upstream that streams until OFFERED bytes or the gateway goes away."""

    def __init__(self) -> None:
        self.sent = 0
        self.ended = asyncio.Event()
        self.cancelled = False

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
        event = b"data: " + orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": CHUNK_TEXT}}]})
        event += b"\n\n"
        try:
            while self.sent < OFFERED:
                await response.write(event)  # waits while the gateway does not read (the transport's buffer)
                self.sent += len(event)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled = True
            raise
        finally:
            self.ended.set()
        return response


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


GUARDED = "              guardrails: {checkers: [{name: pii, type: rules, detectors: [email]}]}\n"


@pytest.mark.parametrize("way", ["pushed", "pushed-through-filters", "pulled"])
async def test_a_slow_reader_holds_the_upstream_back_and_the_gateway_memory_bounded(tmp_path: Path, way: str) -> None:
    upstream = FastUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    runner, port = await start_app(app)
    # The pool's idle timeout (5 s) is shorter than the caller's six seconds of slow reading: the wait of a paused
    # upstream read is the caller's, never the upstream's silence, so the stream is not cut.
    crs = provider_crs(f"http://127.0.0.1:{port}", "openai-compatible")
    if way == "pushed-through-filters":
        crs["route.yaml"] = crs["route.yaml"].replace("              rules:\n", GUARDED + "              rules:\n", 1)
    write_crs(tmp_path / "crs", crs)
    process, url = await spawn_gateway(tmp_path / "crs")
    try:
        assert process.pid is not None
        rss_before = _rss_mb(process.pid)
        if way == "pulled":
            path, body = "/v1/responses", orjson.dumps({"model": "mock-gpt", "stream": True, "input": "go"})
        else:
            path = "/v1/chat/completions"
            body = orjson.dumps({"model": "mock-gpt", "stream": True, "messages": [{"role": "user", "content": "go"}]})
        request = (
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-alice\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        host, gateway_port = url.removeprefix("http://").split(":")
        await loop.sock_connect(sock, (host, int(gateway_port)))
        await loop.sock_sendall(sock, request)
        received = 0
        peak_rss = rss_before
        for _ in range(6):  # 1 KB a second for six seconds
            data = await asyncio.wait_for(loop.sock_recv(sock, 1024), timeout=5)
            assert data, "the gateway closed the stream"
            received += len(data)
            peak_rss = max(peak_rss, _rss_mb(process.pid))
            await asyncio.sleep(1.0)
        sent = upstream.sent
        assert not upstream.ended.is_set(), "the upstream finished: the gateway read it all while the caller did not"
        # Socket buffers (kernel, both hops) and the gateway's high-water mark, not the 200 MB offered.
        assert sent < 32 * 1024 * 1024, sent
        assert peak_rss - rss_before < 40, (rss_before, peak_rss)
        print(
            f"\nupstream sent {sent / 1e6:.1f} MB while the caller read {received} bytes; RSS +{peak_rss - rss_before:.1f} MB"
        )
        sock.close()
        await asyncio.wait_for(upstream.ended.wait(), timeout=10)  # the hang-up reaches the upstream
        assert upstream.sent < OFFERED
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
            await process.wait()
        await runner.cleanup()
