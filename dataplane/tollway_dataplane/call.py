"""The canonical call: one client request, parsed once, in the OpenAI shape every entry is turned into.

Chat completions, the Anthropic-compatible `/messages` entry and later entries all become a `Call`; stages and
translators read it, and a stage that changes the request makes a new one (`with_body`) rather than editing it,
so the bytes forwarded upstream always match the body that was checked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"


@dataclass(frozen=True, slots=True)
class Call:
    endpoint: str  # CHAT | COMPLETIONS | EMBEDDINGS
    body: dict[str, Any]
    raw: bytes  # the body's JSON, as forwarded when nothing else changes
    model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage was set by the caller

    def with_body(self, body: dict[str, Any]) -> Call:
        """The same call with another body (a stage rewrote the request); `raw` follows it."""
        return replace(self, body=body, raw=orjson.dumps(body))
