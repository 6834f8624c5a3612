"""Hypothesis strategies for hostile requests to every endpoint, as the bytes that go on the wire.

Bodies start from the shape each protocol expects and then go wrong in the ways that broke gateways before:
fields of the wrong type, numbers out of range or absurd, unknown content parts, nesting hundreds of levels deep,
truncated or non-UTF-8 JSON, false or unsupported Content-Encodings. Most fields keep a valid value most of the
time, so generated requests get past the first check and reach the deeper code (translation to Anthropic and
Gemini, the model rewrite, stream relays, prompt capture, the rate-limit estimate). Headers carry the client key
in every accepted header, wrong keys, key bytes that are not UTF-8, request ids and rate-limit key values of any
bytes, and now and then a header the HTTP parser refuses. Every invented key contains CANARY, so an answer that
echoes one is caught.

The body key "mock" is never generated: the mock LLM would take it as a script and answer as told.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from harness import CLIENT_KEY, request_bytes
from hypothesis import strategies as st

PATHS = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "models": "/v1/models",
    "messages": "/v1/messages",
}
BODY_KINDS = ("chat", "completions", "embeddings", "messages")


@dataclass(frozen=True)
class Request:
    kind: str
    method: bytes
    path: bytes
    data: bytes  # the whole request, as sent

    @property
    def head(self) -> bool:
        return self.method == b"HEAD"


def weighted(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, the first number of each pair being its weight (st.one_of would treat repeats of
    one strategy as one branch)."""
    return st.sampled_from([strategy for weight, strategy in pairs for _ in range(weight)]).flatmap(lambda s: s)


# -- values ---------------------------------------------------------------------------------------------------

NUMBERS = st.sampled_from(
    [-1_000_000_000_000, -(2**63), -5, -1, 0, 1, 2, 7, 100, 1.5, 0.5, 2.5, 1e-9, 2**31, 2**53, 10**13, 2**63, 1e308]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
    NUMBERS,
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "mock"), children, max_size=4)
    ),
    max_leaves=10,
)
DEPTHS = st.sampled_from([2, 64, 127, 128, 129, 200, 254, 255, 256, 300, 600, 1000, 1023, 1030])


_DEEP_MARK = "__deep_value__"


def nested(depth: int, as_objects: bool) -> bytes:
    """JSON text nesting `depth` containers (written out directly: encoders refuse to go this deep)."""
    if as_objects:
        return b'{"a":' * depth + b'"leaf"' + b"}" * depth
    return b"[" * depth + b'"leaf"' + b"]" * depth


DEEP = st.builds(nested, DEPTHS, st.booleans())
TEXT = weighted((4, st.text(max_size=40)), (1, st.sampled_from(["", "hello", "\u0000\u2028\ufeff", "é" * 30])))
MODELS = weighted(
    (20, st.sampled_from(["mock-gpt", "mock-fuzz", "renamed", "claude-fuzz", "gemini-fuzz", "mock-embedding"])),
    (1, st.sampled_from(["unknown-model", "", "mock-\n", "mock-\u0000x", "m" * 300, "gpt-4o"])),
    (1, st.text(max_size=20)),
    (1, JSON),
)


def sometimes(good: st.SearchStrategy[Any], weight: int = 40) -> st.SearchStrategy[Any]:
    """Usually a valid value, sometimes any JSON at all."""
    return weighted((weight, good), (1, JSON))


def number(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid number, sometimes a negative, absurd or mistyped one."""
    return weighted((30, good), (2, NUMBERS), (1, JSON))


# -- OpenAI chat ----------------------------------------------------------------------------------------------

IMAGE_URLS = st.sampled_from(
    ["https://example.com/cat.png", "data:image/png;base64,iVBORw0KGgo=", "data:;base64,", "ftp://x", "", "data:x"]
)
PARTS = weighted(
    (4, st.fixed_dictionaries({"type": st.just("text"), "text": sometimes(TEXT)})),
    (
        1,
        st.fixed_dictionaries(
            {"type": st.just("image_url"), "image_url": sometimes(st.fixed_dictionaries({"url": IMAGE_URLS}))}
        ),
    ),
    (
        1,
        st.fixed_dictionaries(
            {"type": st.just("file"), "file": sometimes(st.fixed_dictionaries({"file_data": IMAGE_URLS}))}
        ),
    ),
    (
        1,
        st.fixed_dictionaries(
            {
                "type": st.just("input_audio"),
                "input_audio": sometimes(st.fixed_dictionaries({"data": TEXT, "format": TEXT})),
            }
        ),
    ),
    (1, st.fixed_dictionaries({"type": st.just("refusal"), "refusal": sometimes(TEXT)})),
    (1, st.dictionaries(st.sampled_from(["type", "text", "cache_control", "x"]), JSON, max_size=3)),
    (1, JSON),
)
CONTENT = weighted((5, TEXT), (4, st.lists(PARTS, max_size=3)), (1, st.none()), (1, JSON))
TOOL_CALLS = st.lists(
    st.fixed_dictionaries(
        {
            "id": sometimes(st.sampled_from(["call_1", "call_2", ""])),
            "type": st.just("function"),
            "function": sometimes(
                st.fixed_dictionaries(
                    {
                        "name": sometimes(st.sampled_from(["lookup", "f"])),
                        "arguments": sometimes(st.sampled_from(['{"q": 1}', "{}", "[1]", "not json", ""])),
                    }
                )
            ),
        }
    ),
    max_size=2,
)
ROLES = weighted(
    (6, st.sampled_from(["system", "developer", "user", "assistant", "tool"])),
    (1, st.sampled_from(["function", "bogus", ""])),
    (1, JSON),
)
MESSAGE = st.fixed_dictionaries(
    {"role": ROLES, "content": CONTENT},
    optional={
        "tool_calls": sometimes(TOOL_CALLS),
        "tool_call_id": sometimes(st.sampled_from(["call_1", "call_2", "nope"])),
        "name": sometimes(TEXT),
    },
)
TOOLS = st.lists(
    st.fixed_dictionaries(
        {
            "type": sometimes(st.just("function")),
            "function": sometimes(
                st.fixed_dictionaries(
                    {"name": sometimes(st.sampled_from(["lookup", "f"]))},
                    optional={
                        "parameters": sometimes(st.just({"type": "object", "properties": {}})),
                        "description": TEXT,
                    },
                )
            ),
        }
    ),
    max_size=2,
)
COMMON = {
    "stream": sometimes(st.booleans()),
    "stream_options": sometimes(st.fixed_dictionaries({"include_usage": sometimes(st.booleans())})),
    "max_tokens": number(st.integers(1, 64)),
    "max_completion_tokens": number(st.integers(1, 64)),
    "n": number(st.sampled_from([1, 1, 2])),
    "temperature": number(st.floats(0, 2)),
    "top_p": number(st.floats(0, 1)),
    "seed": number(st.integers(0, 1000)),
    "stop": sometimes(st.one_of(TEXT, st.lists(TEXT, max_size=3))),
    "user": sometimes(TEXT),
    "presence_penalty": number(st.floats(-2, 2)),
    "frequency_penalty": number(st.floats(-2, 2)),
    "logprobs": sometimes(st.booleans()),
    "top_logprobs": number(st.integers(0, 20)),
    "x_unknown_field": JSON,
}
CHAT_BODY = st.fixed_dictionaries(
    {"model": MODELS, "messages": weighted((8, st.lists(MESSAGE, min_size=1, max_size=4)), (1, JSON))},
    optional={
        **COMMON,
        "tools": sometimes(TOOLS),
        "tool_choice": sometimes(
            st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "f"}}])
        ),
        "parallel_tool_calls": sometimes(st.booleans()),
        "response_format": sometimes(
            st.sampled_from([{"type": "json_object"}, {"type": "json_schema", "json_schema": {"schema": {}}}])
        ),
    },
)

# -- OpenAI completions and embeddings ------------------------------------------------------------------------

TOKENS = st.lists(st.integers(0, 50_000), min_size=1, max_size=8)
PROMPTS = weighted(
    (5, TEXT), (2, st.lists(TEXT, max_size=3)), (1, TOKENS), (1, st.lists(TOKENS, max_size=3)), (1, JSON)
)
COMPLETIONS_BODY = st.fixed_dictionaries(
    {"model": MODELS, "prompt": PROMPTS},
    optional={**COMMON, "echo": sometimes(st.booleans()), "suffix": sometimes(TEXT), "best_of": number(st.just(1))},
)
EMBEDDINGS_BODY = st.fixed_dictionaries(
    {"model": weighted((4, st.just("mock-embedding")), (1, MODELS)), "input": PROMPTS},
    optional={
        "dimensions": number(st.integers(1, 16)),
        "encoding_format": sometimes(st.sampled_from(["float", "base64"])),
        "user": TEXT,
        "stream": JSON,
    },
)

# -- Anthropic Messages ---------------------------------------------------------------------------------------

SOURCES = weighted(
    (2, st.fixed_dictionaries({"type": st.just("base64"), "media_type": st.just("image/png"), "data": TEXT})),
    (1, st.fixed_dictionaries({"type": st.just("url"), "url": IMAGE_URLS})),
    (1, st.fixed_dictionaries({"type": st.just("text"), "data": TEXT})),
    (1, JSON),
)
BLOCKS = weighted(
    (5, st.fixed_dictionaries({"type": st.just("text"), "text": sometimes(TEXT)})),
    (1, st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]), "source": SOURCES})),
    (
        1,
        st.fixed_dictionaries(
            {
                "type": st.just("tool_use"),
                "id": sometimes(st.just("t1")),
                "name": sometimes(st.just("f")),
                "input": sometimes(st.just({"q": 1})),
            }
        ),
    ),
    (
        1,
        st.fixed_dictionaries(
            {
                "type": st.just("tool_result"),
                "tool_use_id": sometimes(st.just("t1")),
                "content": sometimes(
                    st.one_of(
                        TEXT, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
                    )
                ),
            }
        ),
    ),
    (
        1,
        st.fixed_dictionaries(
            {"type": st.sampled_from(["thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"])}
        ),
    ),
    (1, JSON),
)
ANTHROPIC_MESSAGE = st.fixed_dictionaries(
    {
        "role": weighted((6, st.sampled_from(["user", "assistant"])), (1, JSON)),
        "content": weighted((4, TEXT), (4, st.lists(BLOCKS, max_size=3)), (1, JSON)),
    }
)
MESSAGES_BODY = st.fixed_dictionaries(
    {
        "model": MODELS,
        "max_tokens": number(st.integers(1, 64)),
        "messages": weighted((8, st.lists(ANTHROPIC_MESSAGE, min_size=1, max_size=4)), (1, JSON)),
    },
    optional={
        "system": sometimes(
            st.one_of(TEXT, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2))
        ),
        "stream": sometimes(st.booleans()),
        "temperature": number(st.floats(0, 1)),
        "top_p": number(st.floats(0, 1)),
        "top_k": number(st.integers(0, 50)),
        "stop_sequences": sometimes(st.lists(TEXT, max_size=3)),
        "tools": sometimes(
            st.lists(
                st.fixed_dictionaries(
                    {"name": sometimes(st.just("f"))},
                    optional={
                        "description": TEXT,
                        "input_schema": JSON,
                        "type": st.sampled_from(["custom", "web_search_20250305"]),
                    },
                ),
                max_size=2,
            )
        ),
        "tool_choice": sometimes(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "tool", "none", "bogus"])},
                optional={"name": TEXT, "disable_parallel_tool_use": JSON},
            )
        ),
        "metadata": sometimes(st.fixed_dictionaries({"user_id": TEXT})),
        "thinking": JSON,
    },
)

BODIES = {"chat": CHAT_BODY, "completions": COMPLETIONS_BODY, "embeddings": EMBEDDINGS_BODY, "messages": MESSAGES_BODY}

# -- encoding a body ------------------------------------------------------------------------------------------


@st.composite
def body_bytes(draw: st.DrawFn, kind: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body as sent, and the headers that describe it (Content-Type, Content-Encoding)."""
    body = draw(BODIES[kind])
    deep_text = b""
    if draw(st.sampled_from([False] * 9 + [True])):
        # Nesting far deeper than any real request, where the gateway walks or re-encodes the body.
        deep_text, deep = draw(DEEP), _DEEP_MARK
        messages = body.get("messages")
        first = messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None
        where = draw(st.sampled_from(["top", "content", "prompt"]))
        if where == "content" and first is not None:
            first["content"] = [{"type": "text", "text": "x", "extra": deep}] if draw(st.booleans()) else deep
        elif where == "prompt" and kind in ("completions", "embeddings"):
            body["prompt" if kind == "completions" else "input"] = [deep]
        else:
            body["metadata"] = deep
    raw = orjson.dumps(body)
    if deep_text:
        raw = raw.replace(b'"' + _DEEP_MARK.encode() + b'"', deep_text, 1)
    # (Hypothesis leans towards the first choice of a sampled list: "none" is first, so most bodies stay whole.)
    damage = draw(st.sampled_from(["none"] * 16 + ["truncate", "insert", "replace", "random"]))
    if damage == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "insert":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b'"'])) + raw[at:]
    elif damage == "replace":
        raw = draw(st.sampled_from([b"", b"null", b"[]", b"1", b'"text"', b"{", b"\xef\xbb\xbf{}", b'{"a":1}{"b":2}']))
    elif damage == "random":
        raw = draw(st.binary(max_size=64))
    headers = [
        (
            b"Content-Type",
            draw(
                weighted(
                    (8, st.just(b"application/json")),
                    (1, st.sampled_from([b"text/plain", b"", b"application/json; charset=latin-1"])),
                )
            ),
        )
    ]
    coding = draw(
        weighted(
            (20, st.none()),
            (
                1,
                st.sampled_from(
                    [
                        "gzip",
                        "x-gzip",
                        "deflate",
                        "raw-deflate",
                        "false-gzip",
                        "br",
                        "zstd",
                        "identity",
                        "gzip, br",
                        "\xff",
                    ]
                ),
            ),
        )
    )
    if coding is not None:
        name = {"raw-deflate": "deflate", "false-gzip": "gzip"}.get(coding, coding)
        headers.append((b"Content-Encoding", name.encode("latin-1")))
        if coding in ("gzip", "x-gzip"):
            raw = gzip.compress(raw)
        elif coding == "deflate":
            raw = zlib.compress(raw)
        elif coding == "raw-deflate":
            engine = zlib.compressobj(wbits=-zlib.MAX_WBITS)
            raw = engine.compress(raw) + engine.flush()
    return raw, headers


# -- headers, methods, paths ----------------------------------------------------------------------------------

_KEY = CLIENT_KEY.encode()
AUTH = weighted(
    (10, st.just([(b"Authorization", b"Bearer " + _KEY)])),
    (1, st.sampled_from([[(b"x-api-key", _KEY)], [(b"api-key", _KEY)], [(b"x-goog-api-key", _KEY)]])),
    (1, st.just([])),
    (
        2,
        st.builds(
            lambda name, junk: [(name, junk)],
            st.sampled_from([b"Authorization", b"x-api-key", b"api-key", b"x-goog-api-key"]),
            st.sampled_from(
                [
                    b"Bearer sk-CANARY-wrong",
                    b"Bearer sk-CANARY-\xff\xfe",
                    b"sk-CANARY-\xc3\x28",
                    b"Bearer ",
                    b"Basic c2stQ0FOQVJZ",
                    b"Bearer " + _KEY + b"\xff",
                    b"Bearer " + _KEY + b"A" * 9000,
                    b"\x80CANARY\x81",
                ]
            ),
        ),
    ),
)
HEADER_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-ABCXYZ0123456789_", min_size=1, max_size=12).map(str.encode)
EXTRA_HEADERS = weighted(
    (6, st.just([])),
    (
        3,
        st.lists(
            weighted(
                (
                    3,
                    st.tuples(
                        st.just(b"x-request-id"),
                        weighted(
                            (6, st.sampled_from([b"req-123", b"a" * 128, b"a" * 129, b"\xff\xfe", b"id with space"])),
                            (1, HEADER_BYTES),
                        ),
                    ),
                ),
                (
                    3,
                    st.tuples(
                        st.just(b"X-Tenant"),
                        weighted(
                            (6, st.sampled_from([b"team-a", b"\xff" * 200, "é".encode() * 50])), (1, HEADER_BYTES)
                        ),
                    ),
                ),
                (1, st.tuples(TOKEN, HEADER_BYTES)),
                (
                    1,
                    st.tuples(
                        st.sampled_from([b"Host", b"Accept-Encoding", b"Expect", b"Connection", b"Transfer-Encoding"]),
                        st.sampled_from([b"", b"[::1]:80", b"gzip", b"x" * 300, b"keep-alive", b"chunked"]),
                    ),
                ),
            ),
            max_size=2,
        ),
    ),
)
OTHER_METHODS = weighted(
    (4, st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])),
    (1, TOKEN.map(bytes.upper)),
)


def _safe(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    # The framing headers are the harness's to write; a fuzzed Transfer-Encoding or Connection would only make
    # the client wait for an answer framed differently (the raw HTTP cases cover them byte by byte).
    return [
        (n, v)
        for n, v in headers
        if n.lower() not in (b"transfer-encoding", b"connection", b"content-length", b"expect")
    ]


@st.composite
def requests(draw: st.DrawFn, kind: str) -> Request:
    """A whole request to the endpoint `kind` (a key of PATHS, or "unknown")."""
    headers = list(draw(AUTH)) + _safe(draw(EXTRA_HEADERS))
    if kind in BODY_KINDS:
        path = PATHS[kind]
        method = draw(weighted((12, st.just(b"POST")), (1, OTHER_METHODS)))
        prefix = draw(weighted((12, st.just("")), (1, st.sampled_from(["/v2", "/other", "/v1/v1"]))))
        path = (prefix + path).replace("/v1/v1/v1", "/v1/v1")
        body, body_headers = draw(body_bytes(kind))
        headers += body_headers
    elif kind == "models":
        method = draw(weighted((8, st.just(b"GET")), (1, OTHER_METHODS)))
        tail = draw(
            weighted(
                (4, st.just("")),
                (2, st.sampled_from(["/mock-gpt", "/mock-x", "/unknown", "/", "/%ff", "/a/b"])),
                (1, st.text(max_size=10).map(lambda t: "/" + t.encode().hex())),
            )
        )
        path, body = PATHS["models"] + tail, b""
    else:
        method = draw(OTHER_METHODS)
        path = draw(
            weighted(
                (
                    3,
                    st.sampled_from(
                        [
                            "/",
                            "/v1",
                            "/v1/",
                            "/v2/chat/completions",
                            "/v1/files",
                            "/v1/chat",
                            "/healthz",
                            "/readyz",
                            "/%2e%2e/%2e%2e/etc/passwd",
                            "/v1/%00",
                            "/v1/%ff%fe/chat/completions",
                            "/v1/models/../x",
                            "//",
                            "/v1/chat/completions/extra",
                            "/v1/responses",
                        ]
                    ),
                ),
                (1, st.text(alphabet="abc/%.09-_~:@!$&'()*+,;=", max_size=30).map(lambda t: "/" + t)),
            )
        )
        body = draw(weighted((3, st.just(b"")), (1, st.binary(max_size=64)), (1, st.just(b'{"model":"mock-gpt"}'))))
    data = request_bytes(method, path, headers, body, content_length=True)
    return Request(kind, method, path.encode(), data)


# -- raw header lines ----------------------------------------------------------------------------------------

_FRAMING = (b"content-length", b"transfer-encoding", b"expect")
RAW_LINE_BYTES = st.binary(min_size=0, max_size=60).map(lambda b: b.replace(b"\r\n", b"\n"))


@st.composite
def raw_requests(draw: st.DrawFn) -> Request:
    """A request whose request line or header lines are arbitrary bytes: for the HTTP parser's own rejections."""
    method = draw(
        weighted((3, st.sampled_from([b"GET", b"POST"])), (1, RAW_LINE_BYTES.filter(lambda b: b" " not in b)))
    )
    target = draw(
        weighted(
            (3, st.sampled_from([b"/v1/models", b"/v1/chat/completions", b"/v1/messages"])),
            (1, RAW_LINE_BYTES.map(lambda b: b"/" + b.replace(b" ", b""))),
        )
    )
    version = draw(
        weighted(
            (6, st.just(b"HTTP/1.1")), (1, st.sampled_from([b"HTTP/1.0", b"HTTP/2", b"HTTP/9.9", b"HTTP/1.1x", b""]))
        )
    )
    lines = [method + b" " + target + b" " + version, b"Host: x", b"Authorization: Bearer " + _KEY]
    for _ in range(draw(st.integers(0, 3))):
        line = draw(weighted((2, st.builds(lambda n, v: n + b": " + v, TOKEN, RAW_LINE_BYTES)), (1, RAW_LINE_BYTES)))
        if not line.lstrip().lower().startswith(_FRAMING):  # a body the client never sends would be waited for
            lines.append(line)
    if draw(st.integers(0, 7)) == 0:
        lines.append(b"X-Long: " + b"CANARY" * draw(st.sampled_from([1300, 1400, 2000])))
    body = b""
    if method == b"POST":
        body = b'{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}'
        lines.append(
            draw(
                st.sampled_from(
                    [
                        b"Content-Length: %d" % len(body),
                        b"Content-Length: -1",
                        b"Content-Length: 99999999999999999999",
                        b"Content-Length: 5, 6",
                        b"Transfer-Encoding: chunked",
                    ]
                )
            )
        )
    lines.append(b"Connection: close")
    return Request("raw", method, target, b"\r\n".join(lines) + b"\r\n\r\n" + body)
