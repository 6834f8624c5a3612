"""The key prefix-affinity hashes: the prompt's leading text, in whole blocks.

A model server's prefix cache holds the KV entries of prompt starts it has seen, so requests that begin alike are
cheapest on the server that saw that beginning last. The leading text is the messages in order (role and text of
each: the system prompt, then the early turns) up to `prefixChars` characters (1,024 by default). It is cut into
blocks of 256 characters (about 64 tokens, the block GIE's prefix scorer uses) and only whole blocks count, so a
prompt keeps its key however its tail varies: requests sharing a system prompt longer than `prefixChars` share a
key, and so do the turns of one conversation whose first blocks do not change. A prompt shorter than one block is
hashed whole. Legacy completions use their `prompt`, embeddings their `input`.

The hash is an unkeyed 64-bit BLAKE2b digest: the same on every replica and every run, so several gateway
replicas send a prefix to the same server without talking to each other (Python's own `hash` is salted per
process).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from ..call import CHAT, Call

BLOCK_CHARS = 256


def leading_text(call: Call, limit: int) -> str:
    body = call.body
    if call.endpoint == CHAT:
        out: list[str] = []
        size = 0
        for message in body.get("messages") or ():
            if not isinstance(message, dict):
                continue
            piece = f"{message.get('role', '')}\x1f{_text(message.get('content'))}\x1e"
            out.append(piece)
            size += len(piece)
            if size >= limit:
                break
        return "".join(out)[:limit]
    value = body.get("prompt" if "prompt" in body else "input")
    return (value if isinstance(value, str) else orjson.dumps(value).decode())[:limit]


def prefix_key(call: Call, limit: int) -> int:
    text = leading_text(call, limit)
    whole = len(text) - len(text) % BLOCK_CHARS
    return stable_hash((text[:whole] if whole else text).encode("utf-8", "surrogatepass"))


def stable_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their texts; other parts (images) by type only
        return "".join(
            str(part.get("text", "")) if part.get("type") == "text" else f"<{part.get('type')}>"
            for part in content
            if isinstance(part, dict)
        )
    return ""
