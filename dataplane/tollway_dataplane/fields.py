"""Field rules for what callers send: the types and ranges the gateway itself relies on, per entry protocol.

The gateway reads some fields (the model names a route and a metric label and is echoed in a header; max_tokens
feeds the rate-limit estimate; message text feeds the estimate and prompt capture) and forwards the rest.
Whatever it reads must be what the protocol says it is, or a caller could, say, reserve a negative number of
tokens and switch a rate limit off for everyone. Numbers out of the protocol's range are refused here too, so
the caller learns which field is wrong from the gateway instead of an upstream's less helpful answer.
Every failure is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import GatewayError

MAX_OUTPUT_TOKENS = 1_000_000  # far above any model's output limit, far below what breaks limit arithmetic
MAX_MODEL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Number:
    name: str
    minimum: float
    maximum: float
    integer: bool = False

    def check(self, value: Any) -> None:
        """`value` is present and not null."""
        if isinstance(value, bool) or not isinstance(value, int | float) or (self.integer and isinstance(value, float)):
            raise invalid(self.name, "an integer" if self.integer else "a number", value)
        if not self.minimum <= value <= self.maximum:
            kind = "an integer" if self.integer else "a number"
            raise GatewayError(
                400,
                f"'{self.name}' must be {kind} from {_show(self.minimum)} to {_show(self.maximum)}, "
                f"got {_show(value)}.",
                "invalid_value",
                type="invalid_request_error",
            )


def _show(number: float) -> str:
    return f"{number:g}" if isinstance(number, float) else f"{number:,}"


_INT64 = 2**63 - 1


def _by_name(*rules: Number) -> dict[str, Number]:
    return {rule.name: rule for rule in rules}


# The OpenAI entries (chat, completions, embeddings); ranges as OpenAI documents them.
OPENAI_NUMBERS = _by_name(
    Number("max_tokens", 1, MAX_OUTPUT_TOKENS, integer=True),
    Number("max_completion_tokens", 1, MAX_OUTPUT_TOKENS, integer=True),
    Number("n", 1, 128, integer=True),
    Number("temperature", 0, 2),
    Number("top_p", 0, 1),
    Number("presence_penalty", -2, 2),
    Number("frequency_penalty", -2, 2),
    Number("top_logprobs", 0, 20, integer=True),
    Number("best_of", 1, 20, integer=True),
    Number("dimensions", 1, 65_536, integer=True),
    Number("seed", -_INT64 - 1, _INT64, integer=True),
)

# The Anthropic-compatible `/messages` entry; max_tokens is required there.
ANTHROPIC_NUMBERS = _by_name(
    Number("max_tokens", 1, MAX_OUTPUT_TOKENS, integer=True),
    Number("temperature", 0, 1),
    Number("top_p", 0, 1),
    Number("top_k", 0, MAX_OUTPUT_TOKENS, integer=True),
)


def invalid(name: str, expected: str, value: Any) -> GatewayError:
    got = "null" if value is None else type(value).__name__
    return GatewayError(400, f"'{name}' must be {expected}, got {got}.", "invalid_type", type="invalid_request_error")


def check_numbers(body: dict[str, Any], rules: Mapping[str, Number]) -> None:
    # Walks the fields sent (a handful) rather than every rule (a dozen): this runs on every request.
    for name, value in body.items():
        rule = rules.get(name)
        if rule is not None and value is not None:
            rule.check(value)


def check_model(model: Any) -> str:
    if model is None:
        raise GatewayError(400, "'model' is required.", "missing_model", type="invalid_request_error")
    if not isinstance(model, str) or not model:
        raise invalid("model", "a non-empty string", model)
    # The model names a route and a metric label and may come back in a response header.
    if len(model) > MAX_MODEL_CHARS or not model.isprintable():
        raise GatewayError(
            400,
            f"'model' must be at most {MAX_MODEL_CHARS} printable characters.",
            "invalid_model",
            type="invalid_request_error",
        )
    return model


def check_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise invalid("stop", "a string or an array of strings", stop)


def check_chat_messages(messages: list[Any]) -> None:
    """The parts of chat messages the gateway reads (roles, text for the estimate and prompt capture)."""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(where, "an object", message)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise invalid(f"{where}.role", "a non-empty string", role)
        content = message.get("content")
        if content is None or isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise invalid(f"{where}.content", "a string, an array of content parts or null", content)
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                raise invalid(f"{where}.content[{j}]", "an object", part)
            for name in ("type", "text", "refusal"):
                value = part.get(name)
                if value is not None and not isinstance(value, str):
                    raise invalid(f"{where}.content[{j}].{name}", "a string", value)
