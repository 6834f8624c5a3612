"""OpenAI and OpenAI-compatible upstreams (OpenAI, DeepSeek, DashScope compatible mode, vLLM, Ollama, ...).

The hot path: the caller's body is forwarded byte for byte unless the model is rewritten or stream usage has
to be requested; stream events are relayed as they are, and only the usage event is ever decoded.

A translator made with `responses=True` (OpenAI and Azure OpenAI pools) also serves Responses API requests
natively: the caller's own Responses body (model rewritten) goes to the provider's `/responses` endpoint with
the pool's key, and its answer comes back unchanged, in the caller's dialect. OpenAI-compatible servers get the
chat translation instead: few of them implement the Responses API, and fewer implement all of it.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..answer import RESPONSES, StreamInterrupted
from ..call import Call
from ..pools import PoolKeyRuntime, PoolRuntime
from ..sse import EventSplitter, event_data
from ..usage import Usage, usage_from_openai, usage_from_responses
from .base import ProviderError, StreamState, StreamTranslator, UpstreamRequest, answer_object
from .openai_responses import ResponsesStream

_DONE = b"[DONE]"


def rewrite_body(call: Call, model: str, *, prompt_cache_key: bool = False, web_search: bool = False) -> bytes:
    """The body to send: the caller's bytes when nothing changes, else a re-encoded copy. `web_search`: the
    server takes OpenAI's `web_search_options` (only OpenAI itself); every other server has it removed."""
    needs_usage = call.stream and not call.client_wants_usage and call.endpoint != "embeddings"
    cache_key = call.prompt_cache_key if prompt_cache_key and "prompt_cache_key" not in call.body else None
    drop_search = not web_search and "web_search_options" in call.body
    if model == call.model and not needs_usage and cache_key is None and not drop_search:
        return call.raw
    body = dict(call.body)
    body["model"] = model
    if drop_search:
        del body["web_search_options"]
    if needs_usage:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    if cache_key is not None:
        body["prompt_cache_key"] = cache_key
    return orjson.dumps(body)


def error_from_body(status: int, body: bytes) -> ProviderError:
    """Keep the provider's own message; the status is decided by the caller of the translator."""
    message = ""
    code = None
    error_type = "upstream_error"
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = str(error.get("message") or "")
            code = error.get("code") if isinstance(error.get("code"), str) else None
            error_type = str(error.get("type") or error_type)
        elif isinstance(error, str):
            message = error
    if not message:
        message = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return ProviderError(status=status, message=message, type=error_type, code=code)


class OpenAIStream:
    """Relays OpenAI SSE events, picks up the usage event, and hides it when the caller did not ask for it.

    A stream is whole once it has carried a finish reason or [DONE]; one that ends before either was cut short,
    even if the connection closed cleanly, and `finish` says so. Until then each event is scanned for the two
    markers (a substring search, no decoding); after that, not at all.
    """

    __slots__ = ("_complete", "_splitter", "_usage_only", "_wants_usage", "state")

    def __init__(self, wants_usage: bool):
        self._splitter = EventSplitter()
        self._wants_usage = wants_usage
        self._usage_only = False
        self._complete = False
        self.state = StreamState()

    def feed(self, data: bytes) -> list[bytes]:
        events = self._splitter.feed(data)
        if not self._complete:
            for event in events:
                if _ends_answer(event):
                    self._complete = True
                    break
        for event in events:
            if _followed_by(event, b'"usage":', b"{") and self._take_usage(event):
                if not self._wants_usage and self._usage_only:
                    events = [e for e in events if e is not event]
                break
        self.state.content_events += len(events)
        return events

    def _take_usage(self, event: bytes) -> bool:
        """Record the usage an event reports; True when it did."""
        try:
            data = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return False
        usage = usage_from_openai(data.get("usage")) if isinstance(data, dict) else None
        if usage is None:
            return False
        self.state.usage = usage
        # The extra chunk include_usage adds has no choices; usage riding on a content chunk must be kept.
        self._usage_only = not data.get("choices")
        return True

    def finish(self) -> list[bytes]:
        if not self._complete:
            raise StreamInterrupted("ended before the answer was complete")
        return []


# These run on every event of every stream, so each is one `find` of a long needle (it skips ahead by up to the
# needle's length) rather than several `in` tests: `bytes.__contains__` first tries its argument as an integer and
# builds a TypeError it then discards, and two-byte needles barely skip. Together a third of the translator's cost.


_FINISH = b'"finish_reason":'


def _ends_answer(event: bytes) -> bool:
    """The event carries a finish reason (on any choice), or is the [DONE] marker."""
    at = event.find(_FINISH)
    if at < 0:  # not a chat chunk, which always names its finish reason (null or not)
        return event_data(event).strip() == b"[DONE]"
    return _followed_by(event, _FINISH, b'"', at)


def _followed_by(event: bytes, key: bytes, opener: bytes, at: int | None = None) -> bool:
    """Some `key` (with its colon; `at`: where it first occurs, when known) has a value starting with `opener`,
    right after the colon or one space: `"usage":{` and `"usage": {`, not `"usage":null`."""
    at = event.find(key) if at is None else at
    while at >= 0:
        value = at + len(key)
        first = event[value : value + 1]
        if first == opener or (first == b" " and event[value + 1 : value + 2] == opener):
            return True
        at = event.find(key, value)
    return False


class OpenAITranslator:
    """Also the base for Azure OpenAI, which differs only in URLs and auth header."""

    def __init__(self, responses: bool = False):
        self.responses = responses  # serves Responses API requests natively

    def url(self, call: Call, pool: PoolRuntime, model: str) -> str:
        return f"{pool.config.base_url}/{call.endpoint}"

    def responses_url(self, pool: PoolRuntime) -> str:
        return f"{pool.config.base_url}/responses"

    def auth_headers(self, key: PoolKeyRuntime | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.value}"} if key is not None else {}

    def native(self, call: Call) -> bool:
        """Whether this call goes to the provider as the caller sent it (a Responses request)."""
        return self.responses and call.native is not None and call.native.dialect.name == RESPONSES

    def build_request(self, call: Call, pool: PoolRuntime, key: PoolKeyRuntime | None, model: str) -> UpstreamRequest:
        headers = {"Content-Type": "application/json", **dict(pool.config.headers), **self.auth_headers(key)}
        if call.stream:
            headers["Accept"] = "text/event-stream"
        if self.native(call):
            assert call.native is not None
            body = orjson.dumps({**call.native.body, "model": model})  # Responses streams always report usage
            return UpstreamRequest(url=self.responses_url(pool), headers=headers, body=body, dialect=RESPONSES)
        call.chat_body()  # refuses a request whose chat form left out what the caller asked for
        # Only OpenAI itself is known to take prompt_cache_key and web_search_options; a compatible server (or
        # Azure) may refuse an unknown field.
        openai = pool.config.provider == "openai"
        body = rewrite_body(call, model, prompt_cache_key=openai, web_search=openai)
        return UpstreamRequest(url=self.url(call, pool, model), headers=headers, body=body)

    def translate_response(self, call: Call, body: bytes) -> tuple[bytes, Usage | None]:
        if self.native(call):
            return body, usage_from_responses(answer_object(body).get("usage"))
        return body, usage_from_openai(answer_object(body).get("usage"))

    def translate_error(self, status: int, body: bytes) -> ProviderError:
        return error_from_body(status, body)

    def stream(self, call: Call) -> StreamTranslator:
        if self.native(call):
            return ResponsesStream()
        return OpenAIStream(wants_usage=call.client_wants_usage)
