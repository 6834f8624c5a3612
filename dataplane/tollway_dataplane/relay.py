"""The relay: writes an answer (the upstream's or a stage's) to the caller through the response filter chain.

A whole answer goes through the chain once. A stream is written as it arrives: the first events (read by the
executor) go out with the headers, then each batch the upstream yields is passed through the chain in one call
and written; nothing is buffered beyond what a filter chooses to hold. An upstream stream is relayed from the
upstream connection's own callback, batch by batch through the chain's `feed_now` and straight to the caller's
transport, with no task switch per batch; when a filter must wait (a remote check), the relay's coroutine takes
over that batch and pulls the rest. A stream that breaks after its first
event ends with one error event in the caller's protocol and a clean close, so a client can tell a cut answer
from a whole one. Filters are only built when something needs them: a plain OpenAI route writes the upstream's
events as they are. The caller's protocol builds its own filter, which converts OpenAI answers and leaves an
answer that is already in the caller's dialect (a native pass-through) as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from . import h1, metrics
from .answer import Answer, EventSource, StreamInterrupted
from .caller.base import AnswerProtocol
from .capture import CaptureFilter
from .context import RequestContext
from .errors import GatewayError, sse_error_event
from .messages import Inbound, Response, StreamResponse
from .stages.base import ResponseFilter
from .stages.pipeline import FilterChain
from .upstream import UpstreamStream

log = logging.getLogger("tollway.relay")


async def send(
    request: Inbound,
    ctx: RequestContext,
    answer: Answer,
    filters: Sequence[ResponseFilter],
    protocol: AnswerProtocol | None,
    headers: dict[str, str],
) -> Response | StreamResponse:
    """Write the answer; `filters` are the stages' in request order, `headers` go on the response."""
    chain_filters = list(reversed(filters))
    capture = CaptureFilter() if ctx.capture else None
    if capture is not None:
        chain_filters.append(capture)
    if protocol is not None:
        chain_filters.append(protocol.answer_filter(answer))  # leaves an answer already in its dialect as it is
    chain = FilterChain(chain_filters, answer) if chain_filters else None
    try:
        if answer.stream is None:
            return await _whole(ctx, answer, chain, headers)
        return await _stream(request, ctx, answer.stream, chain, protocol, headers)
    finally:
        if capture is not None:
            ctx.completion = capture.text


async def _whole(ctx: RequestContext, answer: Answer, chain: FilterChain | None, headers: dict[str, str]) -> Response:
    body = answer.body or b""
    # What the upstream used is charged even when a filter refuses the answer (a guardrail block): it was spent.
    ctx.usage = answer.usage
    if chain is not None:
        try:
            body = await chain.body(body)
        except BaseException:
            chain.close(False)
            raise
        chain.close(True)
    ctx.status = 200
    return Response(body=body, headers=headers)


async def _stream(
    request: Inbound,
    ctx: RequestContext,
    source: EventSource,
    chain: FilterChain | None,
    protocol: AnswerProtocol | None,
    headers: dict[str, str],
) -> StreamResponse:
    complete = False
    metrics.IN_FLIGHT_STREAMS.inc()
    try:
        first = await chain.feed(source.first) if chain is not None else source.first
        out = StreamResponse(status=200, headers=headers)
        await out.prepare(request)  # the framing follows the request's version
        ctx.status = 200
        ctx.ttft = time.perf_counter() - ctx.started
        try:
            await out.write(b"".join(first))  # the headers go with it: from here on the body may be written raw
            if chain is not None and chain.ended:
                complete = True  # a filter ended the stream on its first events, which are out
            elif isinstance(source, UpstreamStream) and request.transport is not None:
                complete = await _pushed(out, source, request.transport, chain)
            else:
                complete = await _relay(out, source, chain)
        except (StreamInterrupted, GatewayError) as exc:
            reason = exc.reason if isinstance(exc, StreamInterrupted) else exc.message
            ctx.error = f"upstream {reason} mid-stream" if isinstance(exc, StreamInterrupted) else reason
            log.warning("stream failed after first event", extra={"request_id": ctx.request_id, "reason": reason})
            message = (
                f"The upstream {reason} before the answer was complete."
                if isinstance(exc, StreamInterrupted)
                else reason
            )
            code = "upstream_stream_interrupted"
            event = protocol.stream_error_event(message, code) if protocol else sse_error_event(message, code=code)
            with contextlib.suppress(ConnectionResetError):
                await out.write(event)
        except (ConnectionResetError, asyncio.CancelledError):
            ctx.error = "client disconnected"
            ctx.status = 499
            raise
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        return out
    finally:
        metrics.IN_FLIGHT_STREAMS.dec()
        ctx.usage = source.usage()
        if chain is not None:
            chain.close(complete)
        source.close()


class Pushable(EventSource, Protocol):
    """An event source that can push its data into a sink from the connection itself (the upstream's)."""

    def push(self, sink: h1.BodySink) -> None: ...

    def pull(self) -> None:
        """Stop pushing: the rest comes from `next`."""
        ...

    def translate(self, data: bytes) -> list[bytes]: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def tail(self) -> list[bytes]: ...


# The caller's send buffer: above HIGH the upstream stops being read until it is back under LOW, so a slow caller
# holds the upstream (TCP back-pressure all the way) instead of making the gateway buffer its answer.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_DRAIN_CHECK = 0.02


class _Handover:
    """The chain must wait on this batch: the relay's coroutine awaits the rest of its chain run, then pulls."""

    __slots__ = ("rest",)

    def __init__(self, rest: Coroutine[Any, Any, list[bytes]]):
        self.rest = rest


_Signal = BaseException | _Handover | None  # what the relay's coroutine is woken with: an error, a handover, the end


class _Pusher:
    """The fast path of a stream: each batch of upstream bytes goes from the upstream connection's callback through
    the translator and the filter chain (`feed_now`) straight to the caller's transport, in the response's framing,
    with no task switch. The relay's coroutine only waits for the end, or for a batch the chain must wait on."""

    __slots__ = ("_chain", "_done", "_frame", "_loop", "_paused", "_source", "_transport")

    def __init__(
        self,
        source: Pushable,
        transport: asyncio.Transport,
        chain: FilterChain | None,
        frame: Callable[[bytes], bytes],
        done: asyncio.Future[_Signal],
    ):
        self._source = source
        self._transport = transport
        self._chain = chain
        self._frame = frame  # the response's framing (chunked or not)
        self._done = done
        self._loop = done.get_loop()
        self._paused = False

    def data(self, data: bytes) -> None:
        if self._done.done():
            return
        transport = self._transport
        if transport.is_closing():
            self._finish(ConnectionResetError("the caller went away"))
            return
        try:
            events = self._source.translate(data)
        except StreamInterrupted as exc:
            self._finish(exc)
            return
        if not events:
            return
        chain = self._chain
        if chain is not None:
            try:
                out = chain.feed_now(events)
            except Exception as exc:  # a filter's refusal or bug: the relay's coroutine raises it, as when pulling
                self._finish(exc)
                return
            if not isinstance(out, list):
                self._hand_over(out)
                return
            if not out:
                return
            events = out
        payload = events[0] if len(events) == 1 else b"".join(events)
        transport.write(self._frame(payload))
        if not self._paused and transport.get_write_buffer_size() > _HIGH_WATER:
            self._paused = True
            self._source.pause_reading()
            self._loop.call_later(_DRAIN_CHECK, self._drained)

    def _drained(self) -> None:
        if self._done.done():
            return
        if self._transport.is_closing():
            self._finish(ConnectionResetError("the caller went away"))
        elif self._transport.get_write_buffer_size() > _LOW_WATER:
            self._loop.call_later(_DRAIN_CHECK, self._drained)
        else:
            self._paused = False
            self._source.resume_reading()

    def end(self, error: BaseException | None) -> None:
        if isinstance(error, TimeoutError):
            error = StreamInterrupted("timed out")
        elif isinstance(error, (h1.Disconnected, h1.BadResponse)):
            error = StreamInterrupted("closed the connection")
        self._finish(error)

    def _hand_over(self, rest: Coroutine[Any, Any, list[bytes]]) -> None:
        """From this batch on the relay's coroutine reads the upstream (what arrives meanwhile is buffered)."""
        self._source.pull()
        if self._paused:  # nobody would resume a read paused for the caller's sake: pulling waits on writes
            self._paused = False
            self._source.resume_reading()
        self._finish(_Handover(rest))

    def _finish(self, signal: _Signal) -> None:
        if not self._done.done():
            self._done.set_result(signal)


async def _pushed(
    out: StreamResponse, source: Pushable, transport: asyncio.Transport, chain: FilterChain | None
) -> bool:
    done: asyncio.Future[_Signal] = asyncio.get_running_loop().create_future()
    source.push(_Pusher(source, transport, chain, out.frame, done))
    try:
        signal = await done
    except asyncio.CancelledError:
        unrun = done.result() if done.done() and not done.cancelled() else None
        if isinstance(unrun, _Handover):
            unrun.rest.close()  # handed over as the caller left: never to run
        raise
    if isinstance(signal, _Handover):
        assert chain is not None
        events = await signal.rest
        if events:
            await out.write(b"".join(events))
        return await _relay(out, source, chain)
    if signal is not None:
        raise signal
    tail = await _last(source, chain)
    if tail:
        await out.write(b"".join(tail))
    return True


async def _last(source: EventSource, chain: FilterChain | None) -> list[bytes]:
    """The upstream ended: what the translator and the filters still owe."""
    tail = source.tail()
    if chain is None:
        return tail
    tail = await chain.feed(tail)
    if not chain.ended:
        tail += await chain.finish()
    return tail


async def _relay(out: StreamResponse, source: EventSource, chain: FilterChain | None) -> bool:
    """Batches from the source to the caller until the end; True when the answer completed."""
    while chain is None or not chain.ended:
        events = await source.next()
        if events is None:
            tail = await _last(source, chain)
            if tail:
                await out.write(b"".join(tail))
            return True
        if chain is not None:
            events = await chain.feed(events)
        if events:
            await out.write(b"".join(events) if len(events) > 1 else events[0])
    return True  # a filter ended the stream; its last events were written
