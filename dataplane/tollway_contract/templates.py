"""Message templates with variables, as prompt decorators use them: parsed once, checked by name, filled per request.

Grammar: `{name}` for `date`, `datetime`, `consumer`, `route`, `model`; `{header:NAME}` or `{header:NAME|default}`
for a request header; `{{` and `}}` for literal braces. Another feature may parse with its own variable names
(web search's `{date}`, `{results}`, `{question}`) and without header variables. Anything else in braces is an
error that names it, so the compiler can refuse a typo instead of sending it to a model. Rendering fills
variables into the parsed pieces and returns a plain string: the request body is built from that string, never
by editing JSON text, so a quote in a header value cannot change the request's structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VARIABLES = ("date", "datetime", "consumer", "route", "model")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an HTTP token


class TemplateError(ValueError):
    """A template that cannot be used; the message names the variable or the position."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str  # one of VARIABLES, or "header"
    header: str = ""  # the header's name, lower case, for `header`
    default: str = ""  # for `header`: used when the request does not carry it


Piece = str | Variable


def parse_template(text: str, variables: tuple[str, ...] = VARIABLES, *, headers: bool = True) -> tuple[Piece, ...]:
    """The template's literal text and variables in order; TemplateError naming the first problem. `variables`
    are the names the template may use; `headers` allows `{header:NAME|default}`."""
    pieces: list[Piece] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "{}" and text[i : i + 2] in ("{{", "}}"):
            literal.append(char)
            i += 2
            continue
        if char == "}":
            raise TemplateError(f"unmatched '}}' at position {i} (write '}}}}' for a literal brace)")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        end = text.find("}", i + 1)
        if end < 0:
            raise TemplateError(f"unclosed '{{' at position {i} (write '{{{{' for a literal brace)")
        if literal:
            pieces.append("".join(literal))
            literal = []
        pieces.append(_variable(text[i + 1 : end], variables, headers))
        i = end + 1
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


def _variable(inner: str, variables: tuple[str, ...], headers: bool) -> Variable:
    if inner in variables:
        return Variable(inner)
    if headers and inner.startswith("header:"):
        name, _, default = inner[len("header:") :].partition("|")
        if not _HEADER_NAME.match(name):
            raise TemplateError(f"variable {{{inner}}} does not name a valid header")
        return Variable("header", header=name.lower(), default=default)
    known = ", ".join([*(f"{{{v}}}" for v in variables), *(["{header:NAME|default}"] if headers else [])])
    raise TemplateError(f"unknown variable {{{inner}}}; known: {known}")
