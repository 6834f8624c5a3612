"""What every engine shares: the query it is given, the errors it may raise, and careful HTTP helpers.

An engine is one small class with `search(session, query) -> results`; the stage applies its timeout and
counts its outcome, so engines only build a request and read an answer. Responses are read with a size cap
(a private index can return whole documents) and without compression: the process's shared session does not
decompress (the upstream path relays provider bytes as they are), so engines ask for identity encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from ..results import SearchResult

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
_HEADERS = {"Accept-Encoding": "identity", "User-Agent": "tollway-web-search"}


@dataclass(frozen=True, slots=True)
class Location:
    """The caller's approximate location, from `web_search_options.user_location.approximate`."""

    country: str | None = None  # ISO 3166-1 alpha-2
    region: str | None = None
    city: str | None = None
    timezone: str | None = None  # IANA


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    count: int  # results wanted
    location: Location | None = None


class EngineError(Exception):
    """An engine call failed; `status` is the outcome the metrics count (error, unconfigured)."""

    def __init__(self, message: str, status: str = "error"):
        super().__init__(message)
        self.status = status


class Engine(Protocol):
    name: str  # the engine label of metrics and the access log
    timeout: float

    async def search(self, session: aiohttp.ClientSession, query: Query) -> list[SearchResult]: ...


def require(value: str | None, what: str) -> str:
    """A credential the engine cannot work without: a missing value is a configuration problem, not a failure
    of the service, and is counted as such."""
    if not value:
        raise EngineError(f"no value for {what} in the secrets document", "unconfigured")
    return value


async def request_bytes(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> bytes:
    """The body of a 2xx answer (EngineError otherwise). Never puts the URL in a message: it may carry a key."""
    data = orjson.dumps(json) if json is not None else None
    all_headers = {**_HEADERS, **(headers or {})}
    if data is not None:
        all_headers["Content-Type"] = "application/json"
    try:
        async with session.request(method, url, params=params, headers=all_headers, data=data) as response:
            body = await _read_capped(response)
            if response.status >= 300:
                raise EngineError(f"answered HTTP {response.status}")
            return body
    except aiohttp.ClientError as exc:
        raise EngineError(f"unreachable ({type(exc).__name__})") from None


async def request_json(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    body = await request_bytes(session, method, url, **kwargs)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EngineError("answered with a body that is not JSON") from None
    if not isinstance(data, dict):
        raise EngineError("answered with JSON that is not an object")
    return data


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise EngineError(f"answered with more than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def items(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (an engine's result list), skipping anything else."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
