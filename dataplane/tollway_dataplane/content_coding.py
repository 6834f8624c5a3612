"""Request bodies with a Content-Encoding: which codings the gateway accepts, and decoding them within the limit.

The gateway decodes `gzip` (`x-gzip`) and `deflate` (zlib-wrapped, or raw as some clients send it) itself,
instead of letting the HTTP layer do it, so that the body limit applies to the decoded size (a few kilobytes of
gzip cannot become gigabytes in memory), a body that does not decode is the caller's 400 and not a crash, and any
other coding (`br`, `zstd`, ...) is a 415 that says what is accepted.
"""

from __future__ import annotations

import zlib

from .errors import GatewayError

ACCEPTED = "identity, gzip, deflate"


def _unsupported(coding: str) -> GatewayError:
    shown = coding if coding.isascii() and coding.isprintable() and len(coding) <= 40 else "this coding"
    return GatewayError(
        415,
        f"Content-Encoding {shown!r} is not supported; send the body as {ACCEPTED}.",
        "unsupported_content_encoding",
        type="invalid_request_error",
    )


class Decoder:
    """Decodes one body chunk by chunk; never yields more than the budget it is given (413 past it)."""

    __slots__ = ("_coding", "_engine", "_head", "_limit", "_size")

    def __init__(self, coding: str, limit: int):
        self._coding = coding
        self._limit = limit
        self._size = 0
        self._head = b""  # deflate only: the first byte, when it arrived alone
        # gzip is decided at once; deflate waits for its first bytes (zlib header or raw stream).
        self._engine: zlib._Decompress | None = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None

    def feed(self, data: bytes) -> bytes:
        if self._engine is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0  # RFC 1950's header check
            self._engine = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        engine = self._engine
        out = []
        try:
            while data:
                if engine.eof:
                    raise self._invalid("data after the end of the compressed body")
                piece = engine.decompress(data, self._limit - self._size + 1)
                self._grow(len(piece))
                out.append(piece)
                data = engine.unconsumed_tail or engine.unused_data  # the latter: bytes past the end
        except zlib.error:
            raise self._invalid("it does not decode") from None
        return b"".join(out)

    def finish(self) -> bytes:
        if self._engine is None:
            if self._head:
                raise self._invalid("it is truncated")
            return b""  # an empty body: nothing was compressed
        try:
            rest = self._engine.flush()
        except zlib.error:
            raise self._invalid("it does not decode") from None
        self._grow(len(rest))
        if not self._engine.eof:
            raise self._invalid("it is truncated")
        return rest

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > self._limit:
            raise GatewayError(
                413, f"Decoded request body exceeds the limit of {self._limit} bytes.", "request_too_large"
            )

    def _invalid(self, why: str) -> GatewayError:
        return GatewayError(
            400,
            f"The request body is not valid {self._coding} data ({why}) although Content-Encoding says so.",
            "invalid_content_encoding",
            type="invalid_request_error",
        )


def decoder_for(header: str | None, limit: int) -> Decoder | None:
    """A decoder for the request's Content-Encoding; None for an identity body; 415 for any other coding."""
    if not header:
        return None
    codings = [c.strip().lower() for c in header.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        raise _unsupported(header)  # stacked codings: no client sends them
    coding = codings[0]
    if coding in ("gzip", "x-gzip"):
        return Decoder("gzip", limit)
    if coding == "deflate":
        return Decoder("deflate", limit)
    raise _unsupported(coding)
