"""The prompt decorator: messages the platform adds to every chat request of a rule, before and after the caller's.

Templates are parsed once per snapshot; per request the variables are filled into those pieces and the messages
are inserted into a copy of the parsed body, so nothing is ever substituted into JSON text (a quote in a header
value stays a quote inside a string). The caller cannot switch it off. It applies to chat calls, which is every
entry that carries messages (chat completions, the Anthropic `/messages` entry: a prepended system message is
where Anthropic's `system` comes from); legacy completions and embeddings have no turns to add to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tollway_contract.model import DecoratorMessage, PromptDecorator, Rule
from tollway_contract.templates import Piece, Variable, parse_template

from ..call import CHAT, Call
from .base import CONTINUE, Exchange, StageServices, Step


@dataclass(frozen=True, slots=True)
class _Template:
    role: str
    pieces: tuple[Piece, ...]
    constant: str | None  # the whole content when it has no variables: nothing to render per request

    @classmethod
    def of(cls, message: DecoratorMessage) -> _Template:
        pieces = parse_template(message.content)
        constant = "".join(p for p in pieces if isinstance(p, str)) if all(isinstance(p, str) for p in pieces) else None
        return cls(message.role, pieces, constant)

    def render(self, values: _Values) -> dict[str, str]:
        if self.constant is not None:
            return {"role": self.role, "content": self.constant}
        return {"role": self.role, "content": "".join(p if isinstance(p, str) else values.get(p) for p in self.pieces)}


class _Values:
    """Variable values for one request, computed on first use."""

    __slots__ = ("_date", "_exchange")

    def __init__(self, exchange: Exchange):
        self._exchange = exchange
        self._date: time.struct_time | None = None

    def get(self, variable: Variable) -> str:
        name = variable.name
        if name == "header":
            value = self._exchange.headers.get(variable.header)
            return _text(value) if value is not None else variable.default
        if name == "consumer":
            return self._exchange.consumer
        if name == "route":
            return self._exchange.route
        if name == "model":
            return self._exchange.requested_model
        if self._date is None:
            self._date = time.gmtime()
        return time.strftime("%Y-%m-%d" if name == "date" else "%Y-%m-%dT%H:%M:%SZ", self._date)


def _text(value: str) -> str:
    """A header value as text: bytes that were not UTF-8 become U+FFFD instead of breaking the JSON encoder."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


class PromptDecoratorStage:
    name = "promptDecorator"

    def __init__(self, config: PromptDecorator):
        self._prepend = tuple(_Template.of(m) for m in config.prepend)
        self._append = tuple(_Template.of(m) for m in config.append)

    async def on_request(self, call: Call, exchange: Exchange) -> Step:
        if call.endpoint != CHAT:
            return CONTINUE
        values = _Values(exchange)
        prepend = [t.render(values) for t in self._prepend]
        append = [t.render(values) for t in self._append]
        exchange.notes["prompt_decorator"] = {"prepended": len(prepend), "appended": len(append)}
        return Step(call=call.with_messages(prepend, append))


def build(rule: Rule, services: StageServices) -> PromptDecoratorStage | None:
    return PromptDecoratorStage(rule.prompt_decorator) if rule.prompt_decorator is not None else None
