"""The calls a stage makes to a model through a ProviderKeyPool (a moderation API, a guard model, embeddings).

A stage call is a small, non-streamed JSON exchange, but it deserves what every request gets from a pool: the
next usable key in the pool's selection order, the provider's auth headers (the pool's own translator says how),
the pool's headers and timeouts, a key benched on the pool's cooldown statuses (honouring Retry-After), another
key tried when one is refused or fails, and failures counted in `tollway_upstream_errors_total` like any
attempt. Two shapes: `post_json` for an OpenAI-shaped path (`moderations`, `embeddings`), `chat` for a chat
completion in any protocol the pool's translator speaks.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import orjson

from .. import metrics
from ..call import CHAT, Call
from ..pools import PoolKeyRuntime, PoolRuntime
from ..providers import translator_for
from ..providers.base import InvalidResponse, Translator
from ..timeouts import effective

_RETRY_STATUSES = (401, 403, 429)  # refused for this key, or throttled: another key may do
_MAX_KEYS = 2  # keys tried per call: a stage call is on someone's critical path
# The process's HTTP client does not decompress (the gateway relays bytes); a stage reads the JSON itself, so it
# asks for an uncompressed answer.
IDENTITY = "identity"


class PoolCallError(Exception):
    """A stage call that did not produce an answer. `reason` is short and safe for labels and logs."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # "429", "500", "timeout", "connect-error", "all-keys-benched", "invalid-response"
        self.detail = detail


class _Auth(Protocol):
    def auth_headers(self, key: PoolKeyRuntime | None) -> dict[str, str]: ...


Request = tuple[str, dict[str, str], bytes]  # url, headers, body


class PoolClient:
    def __init__(self, pool: PoolRuntime, http: Callable[[], aiohttp.ClientSession]):
        self.pool = pool
        self._http = http
        self._translator: Translator | None = translator_for(pool.config.provider)
        timeouts = effective(pool.config.timeouts, None)
        self._first_byte = timeouts.first_byte
        self._timeout = _client_timeout(timeouts.total, timeouts.connect)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to `{baseURL}/{path}` of an OpenAI-shaped pool; the decoded JSON answer."""
        auth = self._translator if hasattr(self._translator, "auth_headers") else None
        if auth is None:
            raise PoolCallError("unsupported", f"pool {self.pool.name} does not speak the OpenAI protocol")
        url = f"{self.pool.config.base_url}/{path}"
        data = orjson.dumps(body)

        def request(key: PoolKeyRuntime | None) -> Request:
            headers = {"Content-Type": "application/json", **dict(self.pool.config.headers)}
            headers.update(auth.auth_headers(key))  # type: ignore[union-attr]
            return url, headers, data

        raw = await self._send(request)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PoolCallError("invalid-response", "the answer is not JSON") from None

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion through the pool's translator; the answer in OpenAI chat shape."""
        translator = self._translator
        if translator is None:
            raise PoolCallError("unsupported", f"provider {self.pool.config.provider!r} is not supported")
        model = str(body.get("model", ""))
        call = Call(CHAT, body, orjson.dumps(body), model, stream=False, client_wants_usage=False)

        def request(key: PoolKeyRuntime | None) -> Request:
            upstream = translator.build_request(call, self.pool, key, model)
            return upstream.url, upstream.headers, upstream.body

        raw = await self._send(request)
        try:
            answer, _ = translator.translate_response(call, raw)
            data = orjson.loads(answer)
        except (InvalidResponse, orjson.JSONDecodeError) as exc:
            raise PoolCallError("invalid-response", str(exc)) from None
        if not isinstance(data, dict):
            raise PoolCallError("invalid-response", "the answer is not a JSON object")
        return data

    async def _send(self, request: Callable[[PoolKeyRuntime | None], Request]) -> bytes:
        pool = self.pool
        keys: list[PoolKeyRuntime | None] = [None]
        if not pool.keyless:
            keys = [*pool.key_order()[:_MAX_KEYS]]
        if not keys:
            raise PoolCallError("all-keys-benched", f"every key of pool {pool.name} is cooling down")
        last = PoolCallError("no-attempt")
        for key in keys:
            try:
                return await self._attempt(key, request(key))
            except PoolCallError as error:
                _count(pool.name, key, error.reason)
                last = error
                if not (error.reason in ("timeout", "connect-error", "reset") or _retryable_status(error.reason)):
                    break
        raise last

    async def _attempt(self, key: PoolKeyRuntime | None, request: Request) -> bytes:
        url, headers, body = request
        headers = {**headers, "Accept-Encoding": IDENTITY}
        if key is not None:
            key.state.in_flight += 1
        try:
            async with asyncio.timeout(self._first_byte):
                async with self._http().post(url, data=body, headers=headers, timeout=self._timeout) as response:
                    data = await response.read()
                    if response.status < 400:
                        return data
                    if key is not None and self.pool.config.cooldown.applies_to(response.status):
                        self.pool.bench(key, _retry_after(response.headers.get("Retry-After")))
                    raise PoolCallError(str(response.status), _error_message(self._translator, response.status, data))
        except TimeoutError:
            raise PoolCallError("timeout", f"pool {self.pool.name} did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise PoolCallError("connect-error", f"cannot connect to {self.pool.name}: {exc.os_error}") from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise PoolCallError("reset", f"{self.pool.name} closed the connection: {type(exc).__name__}") from None
        finally:
            if key is not None:
                key.state.in_flight -= 1


def _retryable_status(reason: str) -> bool:
    return reason.isdigit() and (int(reason) in _RETRY_STATUSES or int(reason) >= 500)


def _count(pool: str, key: PoolKeyRuntime | None, reason: str) -> None:
    metrics.UPSTREAM_ERRORS.labels(pool, "" if key is None else str(key.index), reason).inc()


def _error_message(translator: Translator | None, status: int, body: bytes) -> str:
    if translator is None:
        return f"HTTP {status}"
    return translator.translate_error(status, body).message[:200]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float | None, connect: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, sock_connect=connect)
