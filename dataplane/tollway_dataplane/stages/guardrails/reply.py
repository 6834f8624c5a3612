"""How a blocked request is answered: an OpenAI error, or a completion that says why.

`onBlock: error` is a 400 in the OpenAI error shape (`type: invalid_request_error`, `code: content_filter`, the
configured message as a string, and a `guardrail` object naming the checker, direction and category beside it;
the message stays a string so OpenAI SDKs read it). `onBlock: completion` is a 200 answer in the call's shape,
streamed or not, with `finish_reason: content_filter`, which chat UIs show as a reply. Both are made in OpenAI
shape; a caller of another protocol (`/v1/messages`) gets them converted like any answer or error.

A reply made here carries no usage (a whole answer) or zero usage (a replayed stream), and no pool served it, so
the request's token reservation settles at zero: the tokens are refunded, nothing is charged or counted.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ...answer import Answer
from ...call import COMPLETIONS, Call
from ...errors import GatewayError
from ...providers.chat import DONE_EVENT
from ...usage import Usage
from .view import CONTENT_FILTER


class GuardrailBlocked(GatewayError):
    """A 400 whose error object also says which checker blocked, in which direction, for which category."""

    def __init__(self, message: str, checker: str, direction: str, category: str):
        super().__init__(400, message, "content_filter", type="invalid_request_error")
        self.guardrail = {"checker": checker, "direction": direction, "category": category}

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": None, "code": self.code}
        return orjson.dumps({"error": {**error, "guardrail": self.guardrail}})


class Replay:
    """A stream made up front: every event is in `first`, as the relay expects of an `EventSource`."""

    def __init__(self, events: list[bytes]):
        self.first = events

    async def next(self) -> list[bytes] | None:
        return None

    def tail(self) -> list[bytes]:
        return []

    def usage(self) -> Usage:
        return Usage(input_tokens=0, output_tokens=0, estimated=False)

    def close(self) -> None:
        return None


def completion(call: Call, message: str, request_id: str) -> Answer:
    """A blocked request answered as a completion in the call's shape (stream or not)."""
    created = int(time.time())
    legacy = call.endpoint == COMPLETIONS
    answer_id = f"{'cmpl' if legacy else 'chatcmpl'}-guardrail-{request_id}"
    if not call.stream:
        choice: dict[str, Any] = (
            {"index": 0, "text": message, "logprobs": None, "finish_reason": CONTENT_FILTER}
            if legacy
            else {
                "index": 0,
                "message": {"role": "assistant", "content": message},
                "logprobs": None,
                "finish_reason": CONTENT_FILTER,
            }
        )
        body = {
            "id": answer_id,
            "object": "text_completion" if legacy else "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
        return Answer(body=orjson.dumps(body), model=call.model)
    base = {
        "id": answer_id,
        "object": "text_completion" if legacy else "chat.completion.chunk",
        "created": created,
        "model": call.model,
    }

    def chunk(text: str | None, finish: str | None) -> bytes:
        if legacy:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        else:
            delta = {"role": "assistant", "content": text} if text is not None else {}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    events = [chunk(message, None), chunk(None, CONTENT_FILTER)]
    if call.client_wants_usage:
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        events.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    events.append(DONE_EVENT)
    return Answer(stream=Replay(events), model=call.model)
