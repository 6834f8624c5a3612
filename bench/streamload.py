"""Streaming load client for the benchmark (raw asyncio protocol on uvloop; prints one JSON line).

It reads the `@<ns>;` send-time marker that bench/sse_upstream.py puts in every content chunk, whatever gateway
sits in between, and measures per chunk:
- the gap jitter: (receive gap - send gap) between consecutive chunks of a stream, i.e. how far the gateway
  moved a chunk off the upstream's 50 ms cadence (the headline "inter-chunk delay");
- the transit: receive time - send time (both CLOCK_MONOTONIC on this machine).

Modes (both bounded in count and time, and stop by themselves):
  ttft     COUNT sequential one-token streams on one keep-alive connection: time to first content chunk.
  streams  N concurrent streams, each on its own connection, opened evenly over --ramp seconds, each CHUNKS
           chunks long (at 20 chunks/s: CHUNKS/20 seconds); everything still open at --deadline is aborted and
           counted as incomplete.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import secrets
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

MARK = re.compile(rb"@(\d{6,20});")
now_ns = time.monotonic_ns


class Exchange(asyncio.Protocol):
    """One HTTP/1.1 connection; `start()` sends a request and completes `done` when its response has ended."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.done: asyncio.Future | None = None
        self.buf = bytearray()
        self.sse = bytearray()
        self.head_done = False
        self.status = 0
        self.framing = ""
        self.remaining = 0
        self.need_crlf = False
        self.marks: list[tuple[int, int]] = []  # (receive ns, send ns)
        self.sent_at = 0
        self.error_body = b""
        self.saw_done = False
        self.on_first = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connected.done():
            self.connected.set_result(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            if self.head_done and self.framing == "close":
                self._finish("")
            else:
                self._finish(f"connection closed: {exc or 'EOF'}")

    def data_received(self, data: bytes) -> None:
        if self.done is None:
            return
        now = now_ns()
        buf = self.buf
        if not buf and self.framing == "chunked" and not self.remaining and not self.need_crlf and not self.sse:
            # The common case at 20 chunks/s: one whole chunk of whole events per read. Parsed without copies,
            # so the load core keeps headroom at thousands of streams.
            end = data.find(b"\r\n")
            if 0 < end <= 8 and self.status == 200:
                try:
                    size = int(data[:end], 16)
                except ValueError:
                    size = 0
                if size and len(data) == end + size + 4 and data.endswith(b"\n\r\n"):
                    self._segment(data[end + 2 : -2], now)
                    return
        buf += data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                self.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                self._finish(f"bad status line {lines[0][:80]!r}")
                return
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                self.framing = "chunked"
            elif b"content-length" in headers:
                self.framing = "length"
                self.remaining = int(headers[b"content-length"])
            else:
                self.framing = "close"
            del buf[: end + 4]
            self.head_done = True
            if self.framing == "length" and self.remaining == 0:
                self._finish("" if self.status == 200 else f"status {self.status}")
                return
        if self.framing == "chunked":
            while buf:
                if self.need_crlf:
                    if len(buf) < 2:
                        return
                    del buf[:2]
                    self.need_crlf = False
                if self.remaining == 0:
                    line_end = buf.find(b"\r\n")
                    if line_end < 0:
                        return
                    size = int(bytes(buf[:line_end]).split(b";")[0] or b"0", 16)
                    if size == 0:
                        self._feed(b"", now, final=True)
                        return
                    del buf[: line_end + 2]
                    self.remaining = size
                take = min(self.remaining, len(buf))
                self._feed(bytes(buf[:take]), now)
                del buf[:take]
                self.remaining -= take
                if self.remaining == 0:
                    self.need_crlf = True
        elif self.framing == "length":
            take = min(self.remaining, len(buf))
            self._feed(bytes(buf[:take]), now)
            del buf[:take]
            self.remaining -= take
            if self.remaining == 0:
                self._feed(b"", now, final=True)
        else:
            self._feed(bytes(buf), now)
            buf.clear()

    # -- body ----------------------------------------------------------------------------------------------

    def _feed(self, data: bytes, now: int, final: bool = False) -> None:
        if self.status != 200:
            self.error_body = (self.error_body + data)[:400]
            if final:
                self._finish(f"status {self.status}: {self.error_body.decode(errors='replace')[:300]}")
            return
        sse = self.sse
        sse += data
        last = sse.rfind(b"\n")
        if last >= 0 or final:
            cut = len(sse) if final else last + 1
            segment = bytes(sse[:cut])
            del sse[:cut]
            self._segment(segment, now)
        if final:
            self._finish("")

    def _segment(self, segment: bytes, now: int) -> None:
        """Whole lines of events: their send-time marks, and whether the stream said [DONE]."""
        found = MARK.findall(segment)
        if found:
            first = not self.marks
            self.marks.extend((now, int(m)) for m in found)
            if first and self.on_first is not None:
                self.on_first()
        if b"[DONE]" in segment:
            self.saw_done = True

    def _finish(self, error: str) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(error)

    # -- API -------------------------------------------------------------------------------------------------

    def start(self, request: bytes) -> asyncio.Future:
        self._reset()
        self.done = asyncio.get_running_loop().create_future()
        self.sent_at = now_ns()
        assert self.transport is not None
        self.transport.write(request)
        return self.done


def build_request(url: str, headers: list[str], body: dict) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    payload = orjson.dumps(body)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.hostname}:{parts.port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(payload)}",
    ]
    lines.extend(headers)
    return parts.hostname or "127.0.0.1", parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def summary(values: list[float], scale: float = 1e-6) -> dict:
    """Percentiles in ms of ns values."""
    if not values:
        return {"n": 0}
    values = sorted(values)

    def at(p: float) -> float:
        return round(values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] * scale, 3)

    return {"n": len(values), "p50": at(50), "p90": at(90), "p99": at(99), "p999": at(99.9), "max": at(100)}


async def _connect(host: str, port: int) -> Exchange:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Exchange, host, port)
    return proto


NONCE = secrets.token_hex(4)  # this run's prompts are new to any cache, earlier runs' included


def asking(args: argparse.Namespace, text: str, max_tokens: int) -> Callable[[int], bytes]:
    """The request of stream i: the same one each time, or with --vary a prompt nobody asked before."""

    def request(i: int) -> bytes:
        content = f"{text} ({NONCE}-{i})" if args.vary else text
        body = {"model": args.model, "messages": [{"role": "user", "content": content}], "stream": True}
        return build_request(args.url, args.header, {**body, "max_tokens": max_tokens})[2]

    if args.vary:
        return request
    fixed = request(0)
    return lambda i: fixed


async def run_ttft(args: argparse.Namespace) -> dict:
    host, port, _ = build_request(args.url, args.header, {})
    request = asking(args, "Say hello.", 1)
    deadline = time.monotonic() + args.max_seconds
    ttfts: list[int] = []
    totals: list[int] = []
    errors: dict[str, int] = {}
    reconnects = 0
    conn = await _connect(host, port)
    while len(ttfts) + sum(errors.values()) < args.count and time.monotonic() < deadline:
        if conn.closed:
            reconnects += 1
            conn = await _connect(host, port)
        try:
            error = await asyncio.wait_for(conn.start(request(len(ttfts) + sum(errors.values()))), timeout=30)
        except TimeoutError:
            error = "timeout"
            conn.transport.abort()
        end = now_ns()
        if not error and not conn.marks:
            error = "no content chunk"
        if error:
            key = error[:200]
            errors[key] = errors.get(key, 0) + 1
            if sum(errors.values()) > 20 and not ttfts:
                break
            continue
        ttfts.append(conn.marks[0][0] - conn.sent_at)
        totals.append(end - conn.sent_at)
    if conn.transport is not None:
        conn.transport.close()
    return {
        "mode": "ttft",
        "ttft_ms": summary(ttfts),
        "total_ms": summary(totals),
        "errors": errors,
        "reconnects": reconnects,
    }


async def run_streams(args: argparse.Namespace) -> dict:
    host, port, _ = build_request(args.url, args.header, {})
    request = asking(args, "Tell me a long story.", args.chunks)
    n = args.streams
    state = {"open": 0, "peak": 0, "peak_at": None}
    t0 = time.monotonic()
    errors: dict[str, int] = {}
    conns: list[Exchange | None] = [None] * n

    def opened() -> None:
        state["open"] += 1
        if state["open"] > state["peak"]:
            state["peak"] = state["open"]
            state["peak_at"] = round(time.monotonic() - t0, 3)
            if state["peak"] == n:
                print(f"all {n} streams open at {state['peak_at']}s", file=sys.stderr, flush=True)

    async def one(i: int) -> str:
        await asyncio.sleep(max(0.0, t0 + i * args.ramp / n - time.monotonic()))
        try:
            conn = await _connect(host, port)
        except OSError as exc:
            return f"connect: {exc.strerror or exc}"
        conns[i] = conn
        conn_done = conn.start(request(i))
        conn.on_first = opened
        try:
            error = await conn_done
        finally:
            if conn.marks:
                state["open"] -= 1
            if conn.transport is not None:
                conn.transport.close()
        if not error and len(conn.marks) < args.chunks:
            error = f"incomplete: {len(conn.marks)}/{args.chunks} chunks"
        return error

    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=args.deadline)
    for task in pending:
        task.cancel()
    for conn in conns:
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.abort()
    if pending:
        errors[f"unfinished at the {args.deadline:.0f}s deadline"] = len(pending)
    elapsed = time.monotonic() - t0
    for task in done:
        error = task.result() if not task.cancelled() and task.exception() is None else repr(task.exception())
        if error:
            key = error[:160]
            errors[key] = errors.get(key, 0) + 1
    gaps: list[int] = []
    transit: list[int] = []
    ttft: list[int] = []
    complete = 0
    chunks = 0
    for conn in conns:
        if conn is None or not conn.marks:
            continue
        marks = conn.marks
        chunks += len(marks)
        if len(marks) >= args.chunks:
            complete += 1
        ttft.append(marks[0][0] - conn.sent_at)
        prev_r, prev_s = marks[0]
        for r, s in marks[1:]:
            gaps.append((r - prev_r) - (s - prev_s))
            transit.append(r - s)
            prev_r, prev_s = r, s
    await asyncio.sleep(0)
    return {
        "mode": "streams",
        "streams": n,
        "chunks_per_stream": args.chunks,
        "complete": complete,
        "chunks_received": chunks,
        "peak_open": state["peak"],
        "peak_open_at_s": state["peak_at"],
        "elapsed_s": round(elapsed, 2),
        "gap_jitter_ms": summary(gaps),
        "transit_ms": summary(transit),
        "ttft_ms": summary(ttft),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("ttft", "streams"))
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/v1/chat/completions")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--model", default="bench-stream")
    parser.add_argument("--count", type=int, default=200, help="ttft: sequential streams")
    parser.add_argument("--max-seconds", type=float, default=10, help="ttft: time cap")
    parser.add_argument("--streams", type=int, default=100, help="streams: concurrent streams")
    parser.add_argument("--chunks", type=int, default=100, help="streams: content chunks per stream")
    parser.add_argument("--ramp", type=float, default=1.0, help="streams: seconds over which streams are opened")
    parser.add_argument("--vary", action="store_true", help="a new prompt per stream (a cache on the route misses)")
    parser.add_argument("--deadline", type=float, default=30, help="streams: hard stop, seconds")
    args = parser.parse_args()
    gc.disable()  # a collection pass over ~100k recorded tuples would stall the loop and show up as jitter
    coro = run_ttft(args) if args.mode == "ttft" else run_streams(args)
    result = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
