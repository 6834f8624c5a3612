"""Deterministic model output shared by every wire protocol: text pieces, token estimates, embeddings."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Sequence

import orjson

DEFAULT_TEXT = "Hello from the Tollway mock model."

# Word-sized pieces that keep their leading whitespace, so joining the pieces gives back the text.
_WORDS = re.compile(r"\s*\S+|\s+\Z")


def split_words(text: str) -> list[str]:
    return _WORDS.findall(text)


def pieces(text: str, count: int | None = None) -> list[str]:
    """The text as word pieces, repeated or cut to ``count`` pieces when a script asks for a length."""
    words = split_words(text)
    if count is None:
        return words
    if not words:
        return []
    out = []
    for i in range(count):
        word = words[i % len(words)]
        # A repetition restarts at the first word, which has no separating space of its own.
        if i >= len(words) and i % len(words) == 0 and not word[0].isspace():
            word = " " + word
        out.append(word)
    return out


def truncate(text_pieces: list[str], max_tokens: int | None) -> tuple[list[str], bool]:
    """Cut to ``max_tokens`` pieces (one piece counts as one token); the flag says whether it cut."""
    if max_tokens is not None and len(text_pieces) > max_tokens:
        return text_pieces[:max_tokens], True
    return text_pieces, False


def estimate_tokens(characters: int) -> int:
    """Roughly four characters per token, never zero: cheap, deterministic and easy to assert on."""
    return max(1, math.ceil(characters / 4))


def embedding(item: str | Sequence[int], dimensions: int) -> list[float]:
    """A unit vector derived from a hash of the input: equal inputs embed equally across runs."""
    seed = item.encode() if isinstance(item, str) else orjson.dumps(list(item))
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        values.extend(word / 2**31 - 1.0 for word in struct.unpack(">8I", digest))
        block += 1
    del values[dimensions:]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
