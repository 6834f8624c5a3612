"""The canonical call: one client request, parsed once, in the OpenAI chat shape every entry is turned into.

Chat completions, the Anthropic-compatible `/messages` entry and later entries all become a `Call`; stages and
translators read it. A request that arrived in another protocol also keeps the caller's own body (`native`), so
a pool that speaks that protocol can be sent exactly what the caller sent (native pass-through: every field,
unknown ones included), while translated pools get the chat body.

Stages never edit either body in place. They change a call through the few operations a stage needs (add
messages, rewrite texts, replace the chat body), each of which makes a new call and applies the same change to
the native body through its protocol, so a pass-through request carries the decorator's system prompt or a
guardrail's mask just as a translated one does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson

from .errors import GatewayError

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"

TextRewrite = Callable[[str, str], str]  # (role, text) -> the text to send instead


class NativeDialect(Protocol):
    """How stage edits apply to a caller's own request body (implemented by each caller's protocol)."""

    name: str  # "anthropic", "responses": the dialect of the body and of a pass-through answer

    def add_messages(
        self, body: dict[str, Any], prepend: list[dict[str, str]], append: list[dict[str, str]]
    ) -> dict[str, Any]:
        """A copy of `body` with chat-shaped {role, content} messages added before and after the caller's."""
        ...

    def rewrite_texts(self, body: dict[str, Any], rewrite: TextRewrite) -> dict[str, Any]:
        """A copy of `body` with every text the caller wrote passed through `rewrite`."""
        ...


@dataclass(frozen=True, slots=True)
class NativeBody:
    dialect: NativeDialect
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()  # the caller's protocol headers a pass-through keeps (lower case)
    # Why the chat body leaves something out: content only a native pool can take. A translated pool refuses the
    # request with this (a 400 naming the field) instead of serving it without that content.
    untranslatable: GatewayError | None = None


# Made on every request, like the other per-request records (facts, attempts, limit specs and states):
# not frozen, by convention never changed. A frozen dataclass's __init__ sets each field through
# object.__setattr__, 4.5x the cost of a plain one (855 vs 189 ns for nine fields).
@dataclass(slots=True)
class Call:
    endpoint: str  # CHAT | COMPLETIONS | EMBEDDINGS
    body: dict[str, Any]  # the chat (or completions, embeddings) body
    raw: bytes  # the body's JSON, as forwarded when nothing else changes
    model: str
    stream: bool
    client_wants_usage: bool  # stream_options.include_usage was set by the caller
    native: NativeBody | None = None  # the caller's own body, when it spoke another protocol
    # Hints for translators, set by stages: a value a provider may use, never forced on one that would refuse it.
    prompt_cache_key: str | None = None  # OpenAI's prompt-cache routing key, for `openai` pools

    def with_hints(self, *, prompt_cache_key: str | None) -> Call:
        return replace(self, prompt_cache_key=prompt_cache_key)

    def chat_body(self) -> dict[str, Any]:
        """The chat body, for a translated pool; raises the reason when it leaves out what the caller asked for."""
        if self.native is not None and self.native.untranslatable is not None:
            raise self.native.untranslatable
        return self.body

    def with_body(self, body: dict[str, Any]) -> Call:
        """The same call with another chat body (the native body, if any, is left as it is)."""
        return replace(self, body=body, raw=orjson.dumps(body))

    def with_messages(self, prepend: list[dict[str, str]], append: list[dict[str, str]]) -> Call:
        """Chat messages added before and after the caller's, in every body the call carries."""
        call = self.with_body({**self.body, "messages": [*prepend, *self.body["messages"], *append]})
        native = self.native
        if native is not None:
            body = native.dialect.add_messages(native.body, prepend, append)
            call = replace(call, native=replace(native, body=body))
        return call

    def with_texts(self, rewrite: TextRewrite) -> Call:
        """Every text of the caller's messages passed through `rewrite`, in every body the call carries."""
        call = self.with_body({**self.body, "messages": [_rewrite_message(m, rewrite) for m in self.body["messages"]]})
        native = self.native
        if native is not None:
            call = replace(call, native=replace(native, body=native.dialect.rewrite_texts(native.body, rewrite)))
        return call


def _rewrite_message(message: dict[str, Any], rewrite: TextRewrite) -> dict[str, Any]:
    role = str(message.get("role", ""))
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": rewrite(role, content)}
    if isinstance(content, list):
        parts = [
            {**part, "text": rewrite(role, part["text"])}
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
        return {**message, "content": parts}
    return message
