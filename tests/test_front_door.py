"""The gateway's own HTTP/1.1 server: what aiohttp's server did for us and the front door now does itself.

Each test drives a `FrontDoor` over a real socket with raw bytes, so framing, keep-alive and ordering are seen
as a caller sees them. The malformed-request corpus and the fuzzer (tests/reliability) cover what the parser
rejects; these cover the connection's own rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from tollway_dataplane.front_door import FrontDoor
from tollway_dataplane.messages import Answer, Inbound, Response, StreamResponse, encode_head


async def _echo(request: Inbound) -> Answer:
    body = await request.content.read()
    return Response(body=orjson.dumps({"path": request.path, "method": request.method, "body": body.decode()}))


@pytest.fixture
async def door() -> AsyncIterator[FrontDoor]:
    front = FrontDoor(_echo, keepalive_timeout=0.3)
    await front.start("127.0.0.1", 0)
    yield front
    await front.close()


async def _connect(front: FrontDoor) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", front.port)


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """One answer with a Content-Length body: (status line, headers lower-cased, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode().split("\r\n")[:-2]
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 5)
    return status.encode(), headers, body


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_pipelined_requests_are_answered_in_order_on_one_connection(door: FrontDoor) -> None:
    reader, writer = await _connect(door)
    writer.write(b"".join(_post(f"/v1/{i}", b"x" * i) for i in range(1, 21)))
    for i in range(1, 21):
        status, headers, body = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert "connection" not in headers
        assert orjson.loads(body) == {"path": f"/v1/{i}", "method": "POST", "body": "x" * i}
    writer.close()


async def test_a_head_request_gets_the_length_but_no_body(door: FrontDoor) -> None:
    reader, writer = await _connect(door)
    writer.write(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n" + _post("/after", b"{}"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Content-Length: " in head
    status, _, body = await _answer(reader)  # the next bytes are the next answer's, not a body
    assert status == b"HTTP/1.1 200 OK" and orjson.loads(body)["path"] == "/after"
    writer.close()


async def test_connection_close_and_http_1_0_end_the_connection_after_the_answer(door: FrontDoor) -> None:
    for request in (_post("/a", b"", "Connection: close\r\n"), b"GET /b HTTP/1.0\r\n\r\n"):
        reader, writer = await _connect(door)
        writer.write(request)
        _, headers, _ = await _answer(reader)
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_an_http_1_0_caller_that_asks_for_keep_alive_is_told_it_holds(door: FrontDoor) -> None:
    reader, writer = await _connect(door)
    for path in ("/a", "/b"):
        writer.write(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
        _, headers, body = await _answer(reader)
        assert headers["connection"] == "keep-alive"
        assert orjson.loads(body)["path"] == path
    writer.close()


async def test_expect_100_continue_gets_the_interim_answer_before_the_body_is_sent(door: FrontDoor) -> None:
    reader, writer = await _connect(door)
    writer.write(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hi")
    _, _, body = await _answer(reader)
    assert orjson.loads(body)["body"] == "hi"
    writer.close()


async def test_an_idle_connection_and_a_head_that_never_completes_are_closed(door: FrontDoor) -> None:
    idle_reader, idle = await _connect(door)
    slow_reader, slow = await _connect(door)
    slow.write(b"POST /slow HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    assert await asyncio.wait_for(idle_reader.read(), 3) == b""
    assert await asyncio.wait_for(slow_reader.read(), 3) == b""
    idle.close()
    slow.close()


async def test_a_body_the_handler_did_not_read_ends_the_connection() -> None:
    async def unread(request: Inbound) -> Answer:
        return Response(body=b"{}")

    front = FrontDoor(unread)
    await front.start("127.0.0.1", 0)
    try:
        reader, writer = await _connect(front)
        writer.write(b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"a" * 10)
        _, headers, _ = await _answer(reader)
        assert headers["connection"] == "close"  # the rest of the body must not be read as a request
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await front.close()


async def test_a_handler_that_fails_after_its_stream_started_closes_the_connection_without_a_second_answer() -> None:
    async def breaks(request: Inbound) -> Answer:
        out = StreamResponse()
        await out.prepare(request)  # chunked: the request is HTTP/1.1
        await out.write(b"data: 1\n\n")
        return Response(status=500, body=b"{}")  # what a dispatcher does when a bug surfaces mid-stream

    front = FrontDoor(breaks)
    await front.start("127.0.0.1", 0)
    try:
        reader, writer = await _connect(front)
        writer.write(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        received = await asyncio.wait_for(reader.read(), 5)
        assert received.count(b"HTTP/1.1") == 1
        assert received.endswith(b"9\r\ndata: 1\n\n\r\n")  # cut (no last chunk): the caller can tell
        writer.close()
    finally:
        await front.close()


async def test_a_handler_that_raises_gets_error_json_and_the_connection_lives_on() -> None:
    calls = 0

    async def flaky(request: Inbound) -> Answer:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("Bearer sk-secret in a bug's message")
        return Response(body=b"{}")

    front = FrontDoor(flaky)
    await front.start("127.0.0.1", 0)
    try:
        reader, writer = await _connect(front)
        writer.write(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await _answer(reader)
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert headers["content-type"] == "application/json"
        assert orjson.loads(body)["error"]["code"] == "internal_error" and b"sk-secret" not in body
        status, _, _ = await _answer(reader)
        assert status == b"HTTP/1.1 200 OK"
        writer.close()
    finally:
        await front.close()


async def test_draining_closes_idle_connections_and_ends_busy_ones_after_their_answer() -> None:
    release = asyncio.Event()

    async def slow(request: Inbound) -> Answer:
        await release.wait()
        return Response(body=b"{}")

    front = FrontDoor(slow)
    await front.start("127.0.0.1", 0)
    try:
        idle_reader, idle = await _connect(front)
        busy_reader, busy = await _connect(front)
        busy.write(b"GET /busy HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        front.stop_listening()
        assert await asyncio.wait_for(idle_reader.read(), 3) == b""
        release.set()
        _, headers, _ = await _answer(busy_reader)
        assert headers["connection"] == "close"
        assert await asyncio.wait_for(busy_reader.read(), 3) == b""
        with pytest.raises(OSError):
            await _connect(front)
        idle.close()
        busy.close()
    finally:
        await front.close()


async def test_a_disconnecting_caller_cancels_its_handler() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits(request: Inbound) -> Answer:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Response()

    front = FrontDoor(waits)
    await front.start("127.0.0.1", 0)
    try:
        _, writer = await _connect(front)
        writer.write(b"GET /w HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)
    finally:
        await front.close()


def test_a_header_value_cannot_end_its_line_or_add_a_header() -> None:
    head = encode_head(200, {"x-tollway-model": "gpt\r\nSet-Cookie: a=b", "x-ok": "v"}, "application/json", "", None)
    lines = head.decode().split("\r\n")
    assert "x-tollway-model: gpt  Set-Cookie: a=b" in lines
    assert not any(line.startswith("Set-Cookie") for line in lines)
    assert head.endswith(b"x-ok: v\r\n\r\n")
