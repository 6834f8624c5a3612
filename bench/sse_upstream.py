"""A fast streaming OpenAI-compatible upstream for the benchmark: raw asyncio protocol on uvloop, no framework.

POST /v1/chat/completions with `"stream": true` answers a chat.completion.chunk stream: the first chunk at once,
then one chunk every --interval seconds (50 ms: 20 chunks/s), `max_tokens` (or `max_completion_tokens`) content
chunks in all, then the finish chunk, a usage chunk when `stream_options.include_usage` is set, and `[DONE]`.
Each content chunk carries its send time: the content is `@<CLOCK_MONOTONIC ns>;`, so a client on the same
machine can measure each chunk's transit and the jitter a gateway adds to the inter-chunk gaps, whatever the
gateway does to the rest of the JSON. Without `"stream": true` it answers a fixed chat.completion JSON.

One process, one core, keep-alive, chunked transfer encoding. Capacity is measured by the benchmark's "direct"
row (1,000 concurrent streams at 20 chunks/s each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

_now_ns = time.monotonic_ns

JSON_REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-stream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }
)

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Templates:
    """Pre-built SSE events for one model name."""

    _cache: dict[bytes, Templates] = {}

    def __init__(self, model: bytes) -> None:
        head = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"' + model
        self.first = head + b'","choices":[{"index":0,"delta":{"role":"assistant","content":"@'
        self.content = head + b'","choices":[{"index":0,"delta":{"content":"@'
        self.tail = b';"},"finish_reason":null}]}\n\n'
        self.finish = head + b'","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        self.usage_head = head + b'","choices":[],"usage":'

    @classmethod
    def get(cls, model: bytes) -> Templates:
        found = cls._cache.get(model)
        if found is None:
            found = cls._cache[model] = cls(model)
        return found


class Wheel:
    """Every stream's next chunk, by the millisecond it is due: one timer per millisecond that has chunks due,
    not one per chunk. At 2,000 streams (40,000 chunks/s) a timer per chunk was a third of this process's time
    and left the load core no headroom. A chunk leaves up to 1 ms after its slot; its send time is stamped when
    it is written, so the gateway's jitter is measured exactly all the same."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, list[Stream]] = {}

    def add(self, stream: Stream, due: float) -> None:
        slot = int(due * 1000) + 1  # never early
        waiting = self.slots.get(slot)
        if waiting is None:
            self.slots[slot] = [stream]
            self.loop.call_at(slot / 1000, self._fire, slot)
        else:
            waiting.append(stream)

    def _fire(self, slot: int) -> None:
        for stream in self.slots.pop(slot, ()):
            stream.tick()


class Stream:
    __slots__ = ("conn", "index", "interval", "n", "start", "tpl", "usage", "wheel")

    def __init__(self, conn: Conn, model: bytes, n: int, usage: bool, interval: float) -> None:
        self.conn = conn
        self.tpl = Templates.get(model)
        self.n = n
        self.usage = usage
        self.interval = interval
        self.index = 0
        self.wheel = Conn.wheel_of(conn.loop)
        self.start = conn.loop.time()

    def tick(self) -> None:
        conn = self.conn
        if conn.closed or conn.stream is not self:
            return
        tpl = self.tpl
        self.index += 1
        body = (tpl.first if self.index == 1 else tpl.content) + b"%d" % _now_ns() + tpl.tail
        if self.index >= self.n:
            body += tpl.finish
            if self.usage:
                u = b'{"prompt_tokens":12,"completion_tokens":%d,"total_tokens":%d}' % (self.n, self.n + 12)
                body += tpl.usage_head + u + b"}\n\n"
            body += b"data: [DONE]\n\n"
            conn.transport.write(_chunk(body) + b"0\r\n\r\n")
            conn.stream = None
            conn.process()  # a pipelined request may be waiting
            return
        conn.transport.write(_chunk(body))
        self.wheel.add(self, self.start + self.index * self.interval)


class Conn(asyncio.Protocol):
    interval = 0.05
    _wheel: Wheel | None = None

    @classmethod
    def wheel_of(cls, loop: asyncio.AbstractEventLoop) -> Wheel:
        if cls._wheel is None:
            cls._wheel = Wheel(loop)
        return cls._wheel

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.closed = False
        self.stream: Stream | None = None
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stream = None  # its wheel slot finds the connection closed

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.stream is None:
            self.process()

    def process(self) -> None:
        while self.stream is None and not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 65536:
                    self._reply(431, b'{"error":"headers too large"}', close=True)
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            method, _, rest = head[0].partition(" ")
            path = rest.rpartition(" ")[0]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            pos = end + 4
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = bytearray()
                while True:
                    line_end = buf.find(b"\r\n", pos)
                    if line_end < 0:
                        return
                    size = int(bytes(buf[pos:line_end]).split(b";")[0] or b"0", 16)
                    if len(buf) < line_end + 2 + size + 2:
                        return
                    if size == 0:
                        trailer_end = buf.find(b"\r\n\r\n", line_end)
                        if trailer_end < 0:
                            return
                        pos = trailer_end + 4
                        break
                    body += buf[line_end + 2 : line_end + 2 + size]
                    pos = line_end + 2 + size + 2
            else:
                length = int(headers.get("content-length", "0") or 0)
                if len(buf) < pos + length:
                    return
                body = buf[pos : pos + length]
                pos += length
            del buf[:pos]
            close = headers.get("connection", "").lower() == "close"
            self._handle(method, path.split("?")[0], bytes(body), close)

    def _handle(self, method: str, path: str, body: bytes, close: bool) -> None:
        if method == "GET" and path in ("/", "/healthz", "/v1/models"):
            self._reply(200, b'{"object":"list","data":[{"id":"bench-stream","object":"model"}]}', close)
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            self._reply(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}', close)
            return
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._reply(400, b'{"error":{"message":"invalid json","type":"invalid_request_error"}}', close)
            return
        if not req.get("stream"):
            self._reply(200, JSON_REPLY, close)
            return
        n = req.get("max_tokens") or req.get("max_completion_tokens") or 20
        n = max(1, min(int(n), 100000))
        opts = req.get("stream_options") or {}
        model = str(req.get("model") or "bench-stream").encode()[:200].replace(b'"', b"")
        self.transport.write(STREAM_HEAD)
        stream = self.stream = Stream(self, model, n, bool(opts.get("include_usage")), self.interval)
        stream.tick()  # first chunk at once

    def _reply(self, status: int, body: bytes, close: bool) -> None:
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 431: b"Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, reason, len(body), b"Connection: close\r\n" if close else b"", body)
        )
        if close:
            self.closed = True
            self.transport.close()


async def serve(host: str, port: int, interval: float) -> None:
    Conn.interval = interval
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sse upstream listening on http://{host}:{port} (pid {os.getpid()}, interval {interval}s)", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between chunks (default 0.05)")
    args = parser.parse_args()
    coro = serve(args.host, args.port, args.interval)
    if uvloop is not None:
        uvloop.run(coro)
    else:
        asyncio.run(coro)


if __name__ == "__main__":
    main()
