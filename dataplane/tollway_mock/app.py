"""Application assembly, the blocking server entry point and the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Collection, Coroutine
from typing import Any

from aiohttp import web

from . import anthropic, gemini, openai, responses
from .control import ControlApi
from .dispatch import Dispatcher
from .engine import Engine, EngineSettings, LoadReport
from .exchange import Route
from .exposition import FORMATS
from .requestlog import DEFAULT_LOG_LIMIT, RequestLog
from .script import ScriptBook

logger = logging.getLogger("tollway_mock")

# Every wire protocol the mock speaks, searched in order.
ROUTES: tuple[Route, ...] = openai.ROUTES + responses.ROUTES + anthropic.ROUTES + gemini.ROUTES

# For in-process tests that prefer the objects to the control API.
REQUEST_LOG = web.AppKey("tollway_mock.request_log", RequestLog)
SCRIPT_BOOK = web.AppKey("tollway_mock.script_book", ScriptBook)
ENGINE = web.AppKey("tollway_mock.engine", Engine)

_MAX_BODY = 64 * 1024**2  # prompts with inline images are large


def create_app(
    *,
    require_keys: Collection[str] | None = None,
    log_limit: int | None = DEFAULT_LOG_LIMIT,
    engine: EngineSettings | None = None,
    metrics_format: str = "vllm",
) -> web.Application:
    """The mock. `engine` simulates an inference server's slots, queue, prefill and prefix cache (default: answer
    at once); `metrics_format` names the figures /metrics reports (vllm | sglang)."""
    # handler_cancellation here (not on the runner) so every runner cancels the handler the moment the
    # client disconnects; that is what records outcome "client_disconnected" even mid-sleep.
    app = web.Application(client_max_size=_MAX_BODY, handler_args={"handler_cancellation": True})
    log, book = RequestLog(log_limit), ScriptBook()
    app[REQUEST_LOG] = log
    app[SCRIPT_BOOK] = book
    simulated = app[ENGINE] = Engine(engine)
    app.router.add_routes(ControlApi(log, book, simulated, LoadReport(format=metrics_format)).routes())
    keys = frozenset(require_keys) if require_keys else None
    dispatcher = Dispatcher(ROUTES, openai.DIALECT, log, book, keys, simulated)
    app.router.add_route("*", "/{tail:.*}", dispatcher.handle)
    return app


def serve(
    host: str = "127.0.0.1",
    port: int = 9090,
    require_keys: Collection[str] | None = None,
    engine: EngineSettings | None = None,
    metrics_format: str = "vllm",
) -> None:
    """Serve until SIGINT or SIGTERM."""
    _run(_serve(host, port, create_app(require_keys=require_keys, engine=engine, metrics_format=metrics_format)))


async def _serve(host: str, port: int, app: web.Application) -> None:
    # No access log: under benchmark load it would cost more than the mock itself.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        # A deep backlog so hundreds of clients connecting at once are not refused.
        await web.TCPSite(runner, host, port, backlog=1024).start()
        bound_port = runner.addresses[0][1] if runner.addresses else port
        shown_host = f"[{host}]" if ":" in host else host
        logger.info("tollway mock LLM listening on http://%s:%s", shown_host, bound_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not available off the main thread or on Windows; Ctrl-C then ends the loop the default way.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--require-key",
        dest="require_keys",
        action="append",
        metavar="KEY",
        help="accept only this API key (repeatable); by default any key or none is accepted",
    )
    parser.add_argument(
        "--metrics-format", choices=FORMATS, default="vllm", help="metric names /metrics reports (default: %(default)s)"
    )
    sim = parser.add_argument_group("inference simulation (off unless one of these is given)")
    sim.add_argument("--slots", type=int, help="requests served at once; more wait in a queue")
    sim.add_argument("--prefill-ms-per-token", type=float, default=0.0, help="prefill time per uncached prompt token")
    sim.add_argument("--decode-ms-per-token", type=float, default=0.0, help="time per output token")
    sim.add_argument("--prefix-cache-blocks", type=int, default=0, help="prefix cache size in 256-character blocks")
    sim.add_argument("--kv-cache-tokens", type=int, default=0, help="KV-cache size for the reported usage")


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        serve(args.host, args.port, args.require_keys, engine_settings(args), args.metrics_format)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # typically the port is taken
        logger.error("tollway mock: %s", exc)
        return 1
    return 0


def engine_settings(args: argparse.Namespace) -> EngineSettings | None:
    settings = EngineSettings(
        slots=args.slots,
        prefill_ms_per_token=args.prefill_ms_per_token,
        decode_ms_per_token=args.decode_ms_per_token,
        cache_blocks=args.prefix_cache_blocks,
        kv_tokens=args.kv_cache_tokens,
    )
    return None if settings == EngineSettings() else settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway-mock", description="Mock LLM server speaking the OpenAI API")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
