"""Deterministic model output shared by every wire protocol: text pieces, token estimates, embeddings."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Sequence

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
    """A unit vector that makes similar texts similar: the sum of one pseudo-random vector per word (token ids
    count as words), weighted by how often the word occurs. Equal inputs embed equally across runs; texts that
    share most of their words have a cosine near 1, unrelated ones near 0 (with enough dimensions)."""
    words = _WORD.findall(item.lower()) if isinstance(item, str) else [str(token) for token in item]
    values = [0.0] * dimensions
    for word in words or [""]:
        for i, v in enumerate(_word_vector(word, dimensions)):
            values[i] += v
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


_WORD = re.compile(r"\w+")


def _word_vector(word: str, dimensions: int) -> list[float]:
    values: list[float] = []
    block = 0
    seed = word.encode()
    while len(values) < dimensions:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        values.extend(w / 2**31 - 1.0 for w in struct.unpack(">8I", digest))
        block += 1
    return values[:dimensions]
