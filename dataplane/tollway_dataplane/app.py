"""The gateway's HTTP front: one dispatcher for every path, so every answer (even 404 and 405) is OpenAI JSON.

Each request pins the snapshot current at its start and uses it to the end, so a reload never changes the
rules under a request or a stream in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from tollway_contract.model import GatewayConfig, SecretsConfig

from . import accesslog, inbound_headers, metrics, relay
from .answer import Answer
from .call import CHAT, COMPLETIONS, EMBEDDINGS
from .caller.anthropic import ANTHROPIC
from .caller.base import AnswerProtocol, CallerContext, CallerProtocol
from .caller.responses import RESPONSES
from .caller.responses_store import MemoryResponseStore, ResponseStore
from .capture import prompt_text
from .context import RequestContext
from .endpoints.balancer import EndpointSet
from .endpoints.scraper import Scraper
from .errors import GatewayError
from .intake import make_call, parse_body, read_body
from .messages import Answer as HttpAnswer
from .messages import Inbound, Response
from .pools import KeyStateRegistry
from .pricing import cost_usd
from .ratelimit.backends import LimitBackend, MemoryBackend
from .ratelimit.limiter import RateLimiter, facts_for
from .routing import Match, is_glob
from .snapshot import Snapshot
from .stages.base import Exchange, ResponseFilter
from .stages.cache.store import CacheStore, MemoryStore
from .upstream import Upstream, UpstreamError

log = logging.getLogger("tollway.gateway")

# The entries: path suffix, canonical endpoint, and the caller's protocol when it is not OpenAI. Longest first.
_ENTRIES: tuple[tuple[str, str, CallerProtocol | None], ...] = (
    ("/chat/completions", CHAT, None),
    ("/completions", COMPLETIONS, None),
    ("/embeddings", EMBEDDINGS, None),
    ("/messages", CHAT, ANTHROPIC),
    ("/responses", CHAT, RESPONSES),
)
_STORED = "/responses/"  # GET and DELETE {prefix}/responses/{id}: responses kept for previous_response_id


def new_request_id() -> str:
    # 96 random bits without a system call per request (os.urandom is one); ids need to be unique, not secret.
    return f"{random.getrandbits(96):024x}"


class Gateway:
    """Holds the current snapshot and serves requests against it."""

    def __init__(
        self,
        limit_backend: LimitBackend | None = None,
        *,
        capture_text: bool = False,
        capture_limit: int = 2000,
        max_body_bytes: int | None = None,
        cache_store: CacheStore | None = None,
        responses: ResponseStore | None = None,
    ) -> None:
        # The Responses API's kept responses (previous_response_id, GET and DELETE /responses/{id}).
        self.responses = responses if responses is not None else MemoryResponseStore()
        self.limiter = RateLimiter(limit_backend or MemoryBackend(), on_limited=metrics.rate_limited)
        self.capture_text = capture_text  # prompts and completions in the access log (redacted, truncated)
        self.capture_limit = capture_limit
        self.max_body_bytes = max_body_bytes  # overrides the config's settings.maxBodyBytes when set
        self.snapshot: Snapshot | None = None
        self.registry = KeyStateRegistry()
        self.draining = False
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None
        self.upstream = Upstream()  # its own HTTP/1.1 client: connections are made on first use
        # The response cache's store: shared by every snapshot, so entries outlive reloads.
        self.cache_store: CacheStore = cache_store if cache_store is not None else MemoryStore()
        metrics.CACHE_SIZE.source = self.cache_store.stats
        self._scraper: Scraper | None = None
        self.generation = 0

    # -- lifecycle -------------------------------------------------------------------------------------------

    def install(self, snapshot: Snapshot) -> None:
        """Swap in a new snapshot: one reference assignment; requests in flight keep the one they hold."""
        self.snapshot = snapshot
        metrics.BENCHED_KEYS.source = lambda: snapshot.pools
        metrics.model_label.configure(snapshot.config.routes)
        metrics.ENDPOINTS.source = lambda: snapshot.pools
        metrics.CONFIG_GENERATION.set(snapshot.generation)
        metrics.CONFIG_INFO.info({"hash": snapshot.hash})
        metrics.CONFIG_LOADED_AT.set(snapshot.loaded_at)

    def build_snapshot(self, config: GatewayConfig, secrets: SecretsConfig) -> Snapshot:
        self.generation += 1
        return Snapshot.build(
            config,
            secrets,
            self.registry,
            self.generation,
            upstream=self.upstream,
            cache_store=self.cache_store,
            http=self.http_session,
        )

    def http_session(self) -> aiohttp.ClientSession:
        """The process's HTTP client, for stages that call a checker or a model (it exists once started)."""
        if self._session is None:
            raise RuntimeError("the gateway has not started")
        return self._session

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        # Answers are relayed and parsed as they come, so ask for them uncompressed: aiohttp would otherwise offer
        # gzip and deflate, and a provider that took the offer would send bytes no translator can read.
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False, headers={"Accept-Encoding": "identity"}
        )
        self._scraper = Scraper(self._session, self._endpoint_sets, self.registry.endpoints)
        self._scraper.start()

    def _endpoint_sets(self) -> list[EndpointSet]:
        """What the scraper scrapes: the endpoints of the live snapshot's pools."""
        snapshot = self.snapshot
        return [p.endpoints for p in snapshot.pools.values() if p.endpoints is not None] if snapshot else []

    async def stop(self) -> None:
        if self._scraper is not None:
            await self._scraper.stop()
        await self.limiter.drain()
        await self.limiter.backend.close()
        await self.responses.close()
        await self.cache_store.close()
        await self.upstream.client.close()
        if self._session is not None:
            await self._session.close()

    # -- dispatch --------------------------------------------------------------------------------------------

    async def dispatch(self, request: Inbound) -> HttpAnswer:
        path = request.path
        method = request.method
        if path == "/healthz":
            return _json({"status": "ok"})
        if path == "/readyz":
            return self.readyz()
        ctx = RequestContext(
            request_id=inbound_headers.request_id(request.headers) or new_request_id(), method=method, path=path
        )
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        try:
            return await self._serve(request, ctx)
        except asyncio.CancelledError:
            ctx.status = 499  # nginx's "client closed request"
            ctx.error = ctx.error or "client disconnected"
            raise
        except GatewayError as error:
            ctx.status = error.status
            ctx.error = error.message
            headers = {**ctx.response_headers, **error.headers, "x-request-id": ctx.request_id}
            if ctx.protocol is not None:  # the caller speaks another protocol: its error shape
                body = ctx.protocol.error_body(error.status, error.message, error.type, error.code)
                return Response(status=error.status, body=body, headers=headers)
            return error.response(headers)
        except Exception:
            # Never a bare 500 with a stack trace for the caller; the log keeps the details.
            log.exception("unexpected error", extra={"request_id": ctx.request_id})
            ctx.status = 500
            internal = GatewayError(500, "Internal gateway error; the request id identifies it in the logs.")
            return internal.response({"x-request-id": ctx.request_id})
        finally:
            self.in_flight -= 1
            metrics.IN_FLIGHT.dec()
            ctx.finished = time.perf_counter()
            if ctx.usage is not None and ctx.price is not None:
                ctx.cost = cost_usd(ctx.usage, ctx.price)
            if ctx.reservation is not None:
                # Tokens and money are charged as a provider billed them: nothing for an answer no provider made.
                if ctx.billed:
                    self.limiter.settle_soon(ctx.reservation, ctx.usage, ctx.cost)
                else:
                    self.limiter.settle_soon(ctx.reservation, None, None)
            metrics.observe(ctx)
            accesslog.write(ctx, self.capture_limit)

    async def _serve(self, request: Inbound, ctx: RequestContext) -> HttpAnswer:
        snapshot = self.snapshot
        if snapshot is None:
            raise GatewayError(503, "The gateway has not loaded a configuration yet.", "not_ready")
        path, method = ctx.path, ctx.method
        for suffix, endpoint, protocol in _ENTRIES:
            if path.endswith(suffix):
                ctx.protocol = protocol  # errors from here on are in the caller's protocol
                if method != "POST":
                    raise GatewayError(405, f"Use POST for {path}.", "method_not_allowed", headers={"Allow": "POST"})
                ctx.endpoint = endpoint
                return await self._proxy(request, ctx, snapshot, path[: -len(suffix)] or "/", endpoint, protocol)
        if _STORED in path:
            return await self._stored_response(request, ctx, snapshot)
        if path.endswith("/models") or "/models/" in path:
            if method != "GET":
                raise GatewayError(405, f"Use GET for {path}.", "method_not_allowed", headers={"Allow": "GET"})
            return self._models(request, ctx, snapshot)
        raise GatewayError(404, f"Unknown path {path!r}. This gateway serves the OpenAI API under /v1.", "not_found")

    # -- endpoints -------------------------------------------------------------------------------------------

    async def _proxy(
        self,
        request: Inbound,
        ctx: RequestContext,
        snapshot: Snapshot,
        prefix: str,
        endpoint: str,
        protocol: CallerProtocol | None,
    ) -> HttpAnswer:
        """auth -> intake (the caller's protocol -> one canonical call) -> route -> limits -> stages -> upstream
        -> response filters. The order is fixed here; what a route adds lives in its stages."""
        consumer, key_hash = snapshot.auth.authenticate(request.headers, request.remote)
        ctx.consumer = consumer.name
        raw = await read_body(request, self.max_body_bytes or snapshot.config.settings.max_body_bytes)
        body = parse_body(raw)
        answers: AnswerProtocol | None = None
        native = None
        if protocol is not None:
            # The caller's protocol -> a chat body (GatewayError(400) naming the problem), the caller's own body
            # for pools that speak it, and what writes this request's answers.
            intake = await protocol.intake(body, CallerContext(consumer.name, self.responses, request.headers))
            body, native, answers = intake.chat, intake.native, intake.answers
            ctx.protocol = answers
            ctx.notes = intake.notes or None  # the stages note into the same dict, which the caller's answers read
            raw = orjson.dumps(body)
        call = make_call(endpoint, body, raw, native)
        if self.capture_text:
            ctx.capture = True
            ctx.prompt = prompt_text(call.body)
        ctx.requested_model = call.model
        ctx.stream = call.stream
        match = _resolve(snapshot, prefix, _host(request), call.model, consumer.may_use)
        ctx.route = match.route.name
        limits = snapshot.limits_by_route.get(ctx.route)
        if limits:
            facts = facts_for(
                ctx.consumer,
                key_hash,
                ctx.route,
                call.model,
                request.remote or "",
                inbound_headers.TextHeaders(request.headers),
                call.body,
                generates=endpoint != EMBEDDINGS,
                price=snapshot.price_ceiling(match.rule, call.model),
            )
            ctx.reservation = await self.limiter.reserve(limits, facts)
            ctx.response_headers = ctx.reservation.headers
        pipeline = snapshot.pipeline(match.rule)
        filters: list[ResponseFilter] = []
        answer: Answer | None = None
        if pipeline is not None:
            exchange = Exchange(
                request_id=ctx.request_id,
                consumer=ctx.consumer,
                route=ctx.route,
                requested_model=call.model,
                headers=request.headers,
                protocol=protocol.name if protocol is not None else "",
                response_headers=ctx.response_headers,
                notes=ctx.notes or {},
            )
            ctx.notes = exchange.notes
            call, answer, filters = await pipeline.run(call, exchange)
        if answer is None:
            try:
                answer = await self.upstream.forward(call, match.rule, snapshot, request_id=ctx.request_id)
            except BaseException as error:
                if isinstance(error, UpstreamError):
                    ctx.attempts = error.attempts
                for f in filters:  # every filter is closed exactly once, also when no answer came
                    f.close(False)
                raise
        _record_answer(ctx, answer)
        return await relay.send(request, ctx, answer, filters, answers, _answer_headers(ctx, answer))

    async def _stored_response(self, request: Inbound, ctx: RequestContext, snapshot: Snapshot) -> Response:
        """GET or DELETE a kept response: the caller's own only (another consumer's id is not found)."""
        if ctx.method not in ("GET", "DELETE"):
            raise GatewayError(
                405, f"Use GET or DELETE for {ctx.path}.", "method_not_allowed", headers={"Allow": "GET, DELETE"}
            )
        consumer, _ = snapshot.auth.authenticate(request.headers, request.remote)
        ctx.consumer = consumer.name
        response_id = ctx.path.rsplit(_STORED, 1)[1]
        missing = GatewayError(404, f"No response found with id '{response_id}'.", "response_not_found")
        if ctx.method == "DELETE":
            if not await self.responses.delete(consumer.name, response_id):
                raise missing
            ctx.status = 200
            return _json({"id": response_id, "object": "response.deleted", "deleted": True}, ctx.request_id)
        stored = await self.responses.get(consumer.name, response_id)
        if stored is None:
            raise missing
        ctx.status = 200
        return _json(stored.response, ctx.request_id)

    def _models(self, request: Inbound, ctx: RequestContext, snapshot: Snapshot) -> Response:
        consumer, _ = snapshot.auth.authenticate(request.headers, request.remote)
        ctx.consumer = consumer.name
        prefix, _, wanted = ctx.path.partition("/models")
        wanted = wanted.lstrip("/")
        host = _host(request)
        seen: dict[str, dict[str, Any]] = {}
        for route in snapshot.config.routes:
            if route.path_prefix != (prefix or "/") or not consumer.may_use(route):
                continue
            if route.hosts and not any(h == host or (h.startswith("*.") and host.endswith(h[1:])) for h in route.hosts):
                continue
            for rule in route.rules:
                for model in rule.models:
                    seen.setdefault(
                        model,
                        {"id": model, "object": "model", "created": 0, "owned_by": route.name.split("/")[0]}
                        | ({"tollway_pattern": True} if is_glob(model) else {}),
                    )
        ctx.status = 200
        if wanted:
            if wanted not in seen:
                raise GatewayError(
                    404, f"The model {wanted!r} does not exist or you do not have access to it.", "model_not_found"
                )
            return _json(seen[wanted], ctx.request_id)
        return _json({"object": "list", "data": [seen[m] for m in sorted(seen)]}, ctx.request_id)

    def readyz(self) -> Response:
        snapshot = self.snapshot
        if self.draining:
            return _json({"ready": False, "reason": "shutting down"}, status=503)
        if snapshot is None:
            return _json({"ready": False, "reason": "no configuration loaded yet"}, status=503)
        return _json({"ready": True, "configHash": snapshot.hash, "generation": snapshot.generation})


def _record_answer(ctx: RequestContext, answer: Answer) -> None:
    """What the access log and metrics learn from the answer."""
    ctx.attempts = answer.attempts
    served = answer.served
    ctx.billed = served is not None  # a stage's reply (a cache hit, a block) cost no provider tokens
    if served is not None:
        ctx.pool, ctx.served_model, ctx.key_index, ctx.price = served.pool, served.model, served.key_index, served.price
        ctx.served_endpoint = served.endpoint
    else:
        ctx.served_model = answer.model


def _answer_headers(ctx: RequestContext, answer: Answer) -> dict[str, str]:
    headers = {
        "x-request-id": ctx.request_id,
        "x-tollway-route": ctx.route,
        "x-tollway-model": ctx.served_model,
        "x-tollway-pool": ctx.pool,
        "x-tollway-attempts": str(len(ctx.attempts)),
    }
    if ctx.response_headers:
        headers.update(ctx.response_headers)
    if answer.headers:
        headers.update(answer.headers)
    if answer.stream is not None:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
    return headers


def _host(request: Inbound) -> str:
    host = request.headers.get("Host", "")
    if host.startswith("["):
        return host[: host.find("]") + 1].lower()
    return host.split(":", 1)[0].lower()


def _resolve(snapshot: Snapshot, prefix: str, host: str, model: str, may_use: Callable[[Any], bool]) -> Match:
    candidates = snapshot.router.candidates(prefix, host, model)
    for match in candidates:
        if may_use(match.route):
            return match
    if candidates:
        raise GatewayError(403, f"You are not allowed to use the model {model!r}.", "model_not_allowed")
    raise GatewayError(404, f"The model {model!r} does not exist or you do not have access to it.", "model_not_found")


def _json(data: Any, request_id: str | None = None, status: int = 200) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(body=orjson.dumps(data), status=status, headers=headers)
