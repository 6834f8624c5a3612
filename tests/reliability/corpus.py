"""The regression corpus: every input that once broke the gateway, as data (`corpus.json`), turned into bytes.

An entry is either a request the harness frames (`method`, `path`, `headers`, `body`; the client key is added as
`Authorization: Bearer` unless `"auth": false`; `encode` compresses the body for real) or `raw` bytes sent as they
are. Strings are latin-1, one character per byte, so any byte can be written; `{key}` is the client key and
`<<TEXT*N>>` repeats TEXT N times (a 9 KB header, 300 levels of brackets). `expect` is the status the gateway
must answer; the invariants every answer keeps are checked as well.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import CLIENT_KEY, request_bytes

CORPUS = Path(__file__).with_name("corpus.json")
_REPEAT = re.compile(r"<<(.*?)\*(\d+)>>", re.DOTALL)


@dataclass(frozen=True)
class Case:
    id: str
    defect: str
    what: str
    data: bytes
    path: bytes
    expect: int


def expand(text: str) -> bytes:
    text = _REPEAT.sub(lambda m: m.group(1) * int(m.group(2)), text).replace("{key}", CLIENT_KEY)
    return text.encode("latin-1")


def _encode(body: bytes, how: str | None) -> bytes:
    if how is None:
        return body
    if how == "gzip":
        return gzip.compress(body)
    if how == "gzip-truncated":
        packed = gzip.compress(body)
        return packed[: len(packed) // 2]
    if how == "deflate":
        return zlib.compress(body)
    if how == "raw-deflate":
        engine = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return engine.compress(body) + engine.flush()
    raise ValueError(f"unknown encoding {how!r}")


def case(entry: dict[str, Any]) -> Case:
    if "raw" in entry:
        data = expand(entry["raw"])
        path = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b""
    else:
        headers = [(b"Authorization", expand("Bearer {key}"))] if entry.get("auth", True) else []
        headers += [(expand(name), expand(value)) for name, value in entry.get("headers", [])]
        if "body" in entry:
            headers.append((b"Content-Type", b"application/json"))
        body = _encode(expand(entry.get("body", "")), entry.get("encode"))
        path = expand(entry["path"])
        data = request_bytes(entry.get("method", "POST"), path, headers, body)
    return Case(entry["id"], entry["defect"], entry["what"], data, path, entry["expect"])


def load() -> list[Case]:
    return [case(entry) for entry in json.loads(CORPUS.read_text())]
