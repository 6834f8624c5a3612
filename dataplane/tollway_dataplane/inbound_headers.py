"""Request headers as the gateway reads them: the one place header bytes become text.

aiohttp decodes header bytes as UTF-8 with surrogate escapes, so a header carrying bytes that are not UTF-8
arrives as a `str` that cannot be encoded again: hashing it, logging it or echoing it raises. Everything the
gateway takes from a caller's headers (the client key, the request id, values a rate limit is keyed on) is read
through this module, which decides once what such a value means:

* a client key is the exact bytes the caller sent (a key that is not UTF-8 is simply a wrong key: 401);
* a request id is kept only when it is short visible ASCII, else the gateway makes its own;
* any other value is text, with undecodable bytes replaced by U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

_KEY_HEADERS = ("x-api-key", "api-key", "x-goog-api-key")
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII, as every tracing system emits


def raw_bytes(value: str) -> bytes:
    """The bytes the caller sent, surrogate escapes undone (what aiohttp decoded them from)."""
    return value.encode("utf-8", "surrogateescape")


def text(value: str) -> str:
    """The value as valid text: undecodable bytes become U+FFFD."""
    if value.isascii():
        return value
    return raw_bytes(value).decode("utf-8", "replace")


def client_key(headers: Mapping[str, str]) -> bytes | None:
    """The client key from `Authorization: Bearer`, `x-api-key`, `api-key` or `x-goog-api-key`, as bytes."""
    authorization = headers.get("Authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return raw_bytes(token.strip())
    for name in _KEY_HEADERS:
        value = headers.get(name)
        if value and value.strip():
            return raw_bytes(value.strip())
    return None


def request_id(headers: Mapping[str, str]) -> str | None:
    """The caller's `x-request-id` when it is safe to log and echo; None lets the gateway make one."""
    value = headers.get("x-request-id")
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return None


class TextHeaders(Mapping[str, str]):
    """A read-only view of request headers whose values are always valid text (see `text`)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Mapping[str, str]):
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return text(self._headers[name])

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self._headers.get(name)
        return default if value is None else text(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)
