"""OpenAI chat answers as Responses API objects and events, for callers of the `/responses` entry.

A Responses object echoes the request it answers (instructions, tools, sampling parameters, ...), so the answer
side is bound to one request: `ResponsesAnswers` is made by the entry's intake and writes that request's answers
through its filter, the last of the response filter chain. A chat answer becomes a response object; a chat stream
becomes the Responses event sequence (`response.created`, `response.in_progress`, output items with their content
parts and deltas, then `response.completed`, `response.incomplete` or `response.failed`), every event numbered
by `sequence_number`, written as the chat chunks arrive. An answer that is already a Responses answer (a native
pass-through) goes through unchanged; the filter only reads the finished response from it.

Web-search citations (chat `url_citation` annotations, from the route's web-search stage) become the output
text's annotations, and `response.output_text.annotation.added` events in a stream.

With `store` (the default, as with OpenAI) the finished response is kept before its last event (or the body)
leaves, so whoever saw a response complete can continue it with `previous_response_id` at once.
Every shape follows the Open Responses specification, which the tests validate against.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

import orjson

from .. import metrics
from ..answer import RESPONSES, Answer
from ..errors import error_body
from ..providers.chat import obj
from ..sse import event_data
from ..stages.base import PassFilter
from .responses_store import StoredResponse

if TYPE_CHECKING:
    from .base import CallerContext

ToolNames = dict[str, tuple[str, str]]  # a flattened chat function name -> (namespace, name)

_CHOICES = frozenset({"auto", "none", "required"})
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_TERMINAL = (b"response.completed", b"response.incomplete")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def _number(value: Any, default: float) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def envelope(request: dict[str, Any], response_id: str, model: str, created_at: int) -> dict[str, Any]:
    """A response object for `request` that has no output yet: every field the specification requires."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": model,
        "previous_response_id": _str_or_none(request.get("previous_response_id")),
        "instructions": _str_or_none(request.get("instructions")),
        "output": [],
        "error": None,
        "tools": _tools(request.get("tools")),
        "tool_choice": _tool_choice(request.get("tool_choice")),
        "truncation": request["truncation"] if request.get("truncation") in ("auto", "disabled") else "disabled",
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "text": _text(obj(request.get("text"))),
        "top_p": _number(request.get("top_p"), 1.0),
        "presence_penalty": _number(request.get("presence_penalty"), 0.0),
        "frequency_penalty": _number(request.get("frequency_penalty"), 0.0),
        "top_logprobs": _int_or_none(request.get("top_logprobs")) or 0,
        "temperature": _number(request.get("temperature"), 1.0),
        "reasoning": _reasoning(request.get("reasoning")),
        "usage": None,
        "max_output_tokens": _int_or_none(request.get("max_output_tokens")),
        "max_tool_calls": _int_or_none(request.get("max_tool_calls")),
        "store": request.get("store") is not False,
        "background": False,
        "service_tier": _str_or_none(request.get("service_tier")) or "default",
        "metadata": request["metadata"] if isinstance(request.get("metadata"), dict) else {},
        "safety_identifier": _str_or_none(request.get("safety_identifier")),
        "prompt_cache_key": _str_or_none(request.get("prompt_cache_key")),
    }


def _function_tool(tool: dict[str, Any], namespace: str | None) -> dict[str, Any]:
    out = {
        "type": "function",
        "name": str(tool.get("name") or ""),
        "description": _str_or_none(tool.get("description")),
        "parameters": tool["parameters"] if isinstance(tool.get("parameters"), dict) else None,
        "strict": tool["strict"] if isinstance(tool.get("strict"), bool) else None,
    }
    if namespace:
        out["namespace"] = namespace
    return out


def _tools(tools: Any) -> list[dict[str, Any]]:
    """The function tools the model was given (hosted tools were not: a translated pool has none)."""
    out: list[dict[str, Any]] = []
    for tool in tools if isinstance(tools, list) else []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append(_function_tool(tool, None))
        elif kind == "namespace" and isinstance(tool.get("tools"), list):
            namespace = str(tool.get("name") or "")
            out.extend(
                _function_tool(member, namespace)
                for member in tool["tools"]
                if isinstance(member, dict) and member.get("type", "function") == "function"
            )
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str) and choice in _CHOICES:
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "name": choice["name"]}
    mode = choice.get("mode") if isinstance(choice, dict) else None
    if kind == "allowed_tools" and isinstance(mode, str) and mode in _CHOICES and isinstance(choice.get("tools"), list):
        tools = [
            {"type": "function", "name": t["name"]}
            for t in choice["tools"]
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
        return {"type": "allowed_tools", "mode": choice["mode"], "tools": tools}
    return "auto"


def _text(text: dict[str, Any]) -> dict[str, Any]:
    format = obj(text.get("format"))
    kind = format.get("type")
    if kind == "json_schema":
        out: dict[str, Any] = {
            "format": {
                "type": "json_schema",
                "name": str(format.get("name") or "response"),
                "description": _str_or_none(format.get("description")),
                "schema": format["schema"] if isinstance(format.get("schema"), dict) else None,
                "strict": format.get("strict") is True,
            }
        }
    else:
        out = {"format": {"type": "json_object" if kind == "json_object" else "text"}}
    if text.get("verbosity") in ("low", "medium", "high"):
        out["verbosity"] = text["verbosity"]
    return out


def _reasoning(reasoning: Any) -> dict[str, Any] | None:
    if not isinstance(reasoning, dict):
        return None
    return {"effort": _str_or_none(reasoning.get("effort")), "summary": _str_or_none(reasoning.get("summary"))}


def responses_usage(usage: Any) -> dict[str, Any] | None:
    """An OpenAI chat `usage` object in Responses shape (input, cached input, output, reasoning tokens)."""
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None

    def count(data: Any, name: str) -> int:
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    input_tokens, output_tokens = count(usage, "prompt_tokens"), count(usage, "completion_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": count(usage.get("prompt_tokens_details"), "cached_tokens")},
        "output_tokens": output_tokens,
        "output_tokens_details": {
            "reasoning_tokens": count(usage.get("completion_tokens_details"), "reasoning_tokens")
        },
        "total_tokens": input_tokens + output_tokens,
    }


def _status(finish_reason: Any) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


WEB_SEARCH_REQUESTED = "requested"  # notes["responses"]["web_search"] until the answer says who took the tool


def _text_part(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or [], "logprobs": []}


def url_citations(annotations: Any) -> list[dict[str, Any]]:
    """Chat's `url_citation` annotations (the web-search stage's) in the Responses shape: flat, all fields set."""
    out = []
    for annotation in annotations if isinstance(annotations, list) else []:
        citation = obj(obj(annotation).get("url_citation"))
        start, end = citation.get("start_index"), citation.get("end_index")
        if obj(annotation).get("type") != "url_citation" or not isinstance(citation.get("url"), str):
            continue
        if not isinstance(start, int) or not isinstance(end, int):
            continue
        title = citation.get("title")
        out.append(
            {
                "type": "url_citation",
                "url": citation["url"],
                "title": title if isinstance(title, str) else "",
                "start_index": start,
                "end_index": end,
            }
        )
    return out


def _message_item(
    item_id: str, text: str | None, status: str, annotations: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    content = [_text_part(text, annotations)] if text is not None else []
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str, names: ToolNames) -> dict[str, Any]:
    namespace, plain = names.get(name, (None, name))
    item = {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": plain,
    }
    if namespace:
        item["namespace"] = namespace
    return item


def response_from_chat(chat: dict[str, Any], response: dict[str, Any], names: ToolNames) -> dict[str, Any]:
    """A whole chat.completion as the finished response (`response` is its envelope)."""
    choices = chat.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = obj(choice.get("message"))
    status, incomplete = _status(choice.get("finish_reason"))
    item_status = "incomplete" if incomplete else "completed"
    text = message.get("content") if isinstance(message.get("content"), str) else None
    calls = [obj(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    cited = url_citations(message.get("annotations"))
    output = [_message_item(new_id("msg"), text or "", item_status, cited)] if text or not calls else []
    for call in calls:
        function = obj(call.get("function"))
        arguments = function.get("arguments")
        output.append(
            _call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode(),
                item_status,
                names,
            )
        )
    return {
        **response,
        "status": status,
        "incomplete_details": incomplete,
        "completed_at": int(time.time()) if status == "completed" else None,
        "model": str(chat.get("model") or response["model"]),
        "output": output,
        "usage": responses_usage(chat.get("usage")),
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ResponsesEventStream:
    """OpenAI chunk events in, Responses events out. Output items are opened as their first delta arrives (a
    message for text, one function_call per tool call) and closed when the next item starts or the answer ends;
    the terminal event carries the whole response, usage included (the usage chunk follows the finish reason)."""

    def __init__(self, response: dict[str, Any], names: ToolNames) -> None:
        self.response = response  # the envelope; its output grows as items close
        self.final: dict[str, Any] | None = None  # the finished response, once the stream completed
        self.seq = 0
        self.ended = False
        self._names = names
        self._started = False
        self._message: dict[str, Any] | None = None  # the open message item
        self._message_index = 0
        self._text: list[str] = []
        self._annotations: list[dict[str, Any]] = []  # of the open message
        self._calls: dict[int, tuple[int, dict[str, Any]]] = {}  # chat tool call index -> (output index, item)
        self._open_calls: list[int] = []  # chat indexes of calls not closed yet
        self._finish: str | None = None
        self._usage: Any = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return sse(payload)

    def feed(self, events: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            if self.ended:
                break
            payload = event_data(event)
            if payload == b"[DONE]":
                out.extend(self._complete())
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if isinstance(data.get("error"), dict):
                error = data["error"]
                out.extend(self.fail(str(error.get("message") or "upstream stream error"), error.get("code")))
            else:
                out.extend(self._chunk(data))
        return out

    def finish(self) -> list[bytes]:
        if self.ended or not self._started:
            return []
        if self._finish is not None:  # a finish reason but no [DONE]: the answer is whole
            return self._complete()
        return self.fail("The upstream stream ended before the answer was complete.", "upstream_stream_interrupted")

    def fail(self, message: str, code: Any = None) -> list[bytes]:
        """The answer broke after its first event: `response.failed` with what was produced so far."""
        if self.ended:
            return []
        out = self._start({})
        self.ended = True
        # The specification's error codes are its own; ours goes in the message.
        error = {"code": "server_error", "message": message if not code else f"{message} ({code})"}
        failed = {**self.response, "status": "failed", "error": error, "usage": responses_usage(self._usage)}
        out.append(self._event("response.failed", response=failed))
        return out

    def _start(self, data: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        if isinstance(data.get("model"), str) and data["model"]:
            self.response["model"] = data["model"]
        return [
            self._event("response.created", response=self.response),
            self._event("response.in_progress", response=self.response),
        ]

    def _chunk(self, data: dict[str, Any]) -> list[bytes]:
        out = self._start(data)
        if isinstance(data.get("usage"), dict):
            self._usage = data["usage"]
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._delta(text))
            if delta.get("annotations"):  # only the web-search stage's chunk before the finish carries some
                out.extend(self._annotate(url_citations(delta["annotations"])))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.extend(self._tool(call))
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return out

    def _item_status(self) -> str:
        return "incomplete" if _INCOMPLETE.get(self._finish or "") else "completed"

    def _open_message(self) -> list[bytes]:
        out = self._close_calls()
        item = _message_item(new_id("msg"), None, "in_progress")
        self._message, self._message_index, self._text = item, len(self.response["output"]), []
        self._annotations = []
        self.response["output"].append(item)
        out.append(self._event("response.output_item.added", output_index=self._message_index, item=item))
        out.append(
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=self._message_index,
                content_index=0,
                part=_text_part(""),
            )
        )
        return out

    def _delta(self, text: str) -> list[bytes]:
        out = self._open_message() if self._message is None else []
        assert self._message is not None
        self._text.append(text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message["id"],
                output_index=self._message_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _annotate(self, annotations: list[dict[str, Any]]) -> list[bytes]:
        out = self._open_message() if self._message is None else []
        assert self._message is not None
        for annotation in annotations:
            out.append(
                self._event(
                    "response.output_text.annotation.added",
                    item_id=self._message["id"],
                    output_index=self._message_index,
                    content_index=0,
                    annotation_index=len(self._annotations),
                    annotation=annotation,
                )
            )
            self._annotations.append(annotation)
        return out

    def _close_message(self) -> list[bytes]:
        item = self._message
        if item is None:
            return []
        self._message = None
        text = "".join(self._text)
        where = {"item_id": item["id"], "output_index": self._message_index, "content_index": 0}
        part = _text_part(text, self._annotations)
        done = {**item, "status": self._item_status(), "content": [part]}
        self.response["output"][self._message_index] = done
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=part),
            self._event("response.output_item.done", output_index=self._message_index, item=done),
        ]

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        position = call.get("index", 0)
        position = position if isinstance(position, int) else 0
        function = obj(call.get("function"))
        if position not in self._calls:
            out.extend(self._close_message())
            item = _call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "",
                "in_progress",
                self._names,
            )
            index = len(self.response["output"])
            self.response["output"].append(item)
            self._calls[position] = (index, item)
            self._open_calls.append(position)
            out.append(self._event("response.output_item.added", output_index=index, item=item))
        index, item = self._calls[position]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=arguments
                )
            )
        return out

    def _close_calls(self) -> list[bytes]:
        out: list[bytes] = []
        for position in self._open_calls:
            index, item = self._calls[position]
            item["status"] = self._item_status()
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        self._open_calls = []
        return out

    def _complete(self) -> list[bytes]:
        if self.ended:
            return []
        out = self._start({})
        if not self.response["output"]:  # an empty answer is still a message, as in a whole response
            out.extend(self._open_message())
        out.extend(self._close_message())
        out.extend(self._close_calls())
        self.ended = True
        status, incomplete = _status(self._finish)
        final = {
            **self.response,
            "status": status,
            "incomplete_details": incomplete,
            "completed_at": int(time.time()) if status == "completed" else None,
            "usage": responses_usage(self._usage),
        }
        self.final = final
        out.append(self._event(f"response.{status}", response=final))
        return out


class ResponsesAnswers:
    """One request's answers in Responses shapes (an `AnswerProtocol` bound to the request)."""

    def __init__(
        self,
        request: dict[str, Any],
        conversation: list[dict[str, Any]],
        names: ToolNames,
        caller: CallerContext,
        notes: dict[str, Any] | None = None,
    ) -> None:
        self.request = request  # as the caller sent it: what the response echoes
        # The request's notes, which the stages write into too: whether a web-search stage took the hosted tool.
        self.notes = notes
        self.conversation = conversation  # every input item so far (earlier turns, then this request's input)
        self.names = names
        self.caller = caller
        self.response_id = new_id("resp")
        self.created_at = int(time.time())
        self.filter: ResponsesFilter | None = None

    @property
    def store(self) -> bool:
        return self.request.get("store") is not False

    def answer_filter(self, answer: Answer) -> ResponsesFilter:
        self._settle_web_search(answer)
        self.filter = ResponsesFilter(self, answer)
        return self.filter

    def _settle_web_search(self, answer: Answer) -> None:
        """The hosted web_search tool went natively to the provider, to the route's web-search stage (which notes
        every request it sees), was not needed (a stage before it answered: a cache hit, a block), or went
        nowhere: then it was dropped, and is counted like any dropped tool."""
        record = obj(self.notes.get("responses")) if self.notes is not None else {}
        if record.get("web_search") != WEB_SEARCH_REQUESTED:
            return
        assert self.notes is not None
        if answer.dialect == RESPONSES:
            record["web_search"] = "native"
        elif "search" in self.notes:
            record["web_search"] = "stage"
        elif answer.served is None:
            record["web_search"] = "answered_before"
        else:
            record["web_search"] = "dropped"
            record.setdefault("dropped", []).append("tool:web_search")
            metrics.RESPONSES_DROPPED.labels("tool", "web_search").inc()

    def envelope(self, model: str) -> dict[str, Any]:
        return envelope(self.request, self.response_id, model, self.created_at)

    async def keep(self, response: dict[str, Any]) -> None:
        """Keep a finished response for `previous_response_id` and GET (when the caller asked to store it)."""
        if self.store and isinstance(response.get("id"), str) and response.get("status") in ("completed", "incomplete"):
            await self.caller.responses.put(self.caller.consumer, StoredResponse(response, self.conversation))

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes:
        return error_body(message, type, code)

    def stream_error_event(self, message: str, code: str | None) -> bytes:
        """How a stream that broke after its first event ends: `response.failed` for a translated stream (it
        knows its response), an `error` event numbered after the last relayed one for a native one."""
        stream = self.filter.stream if self.filter is not None else None
        if stream is not None and not stream.ended:
            return b"".join(stream.fail(message, code))
        seq = self.filter.sequence if self.filter is not None else 0
        error = {"type": "server_error", "code": code, "message": message, "param": None}
        # The OpenAI SDK reads code and message at the top; the Open Responses specification nests them.
        return sse(
            {"type": "error", "sequence_number": seq, "code": code, "message": message, "param": None, "error": error}
        )


class ResponsesFilter(PassFilter):
    """The last response filter for a Responses caller: converts chat answers, leaves native ones as they are,
    and keeps the finished response before the caller sees it finish."""

    __slots__ = ("_answers", "_kept", "_native", "sequence", "stream")

    def __init__(self, answers: ResponsesAnswers, answer: Answer):
        self._answers = answers
        self._native = answer.dialect == RESPONSES
        self._kept = False
        self.sequence = 0  # events relayed so far (native streams number theirs from 0)
        self.stream: ResponsesEventStream | None = None
        if not self._native:
            self.stream = ResponsesEventStream(answers.envelope(answer.model), answers.names)

    async def body(self, body: bytes) -> bytes:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(data, dict):
            return body
        if self._native:
            if data.get("object") == "response":
                await self._answers.keep(data)
            return body
        if not isinstance(data.get("choices"), list):
            return body
        response = response_from_chat(data, self._answers.envelope(str(data.get("model") or "")), self._answers.names)
        await self._answers.keep(response)
        return orjson.dumps(response)

    async def feed(self, events: list[bytes]) -> list[bytes]:
        if self.stream is None:
            self.sequence += len(events)
            for event in events:
                if not self._kept and any(marker in event for marker in _TERMINAL):
                    await self._keep_native(event)
            return events
        out = self.stream.feed(events)
        await self._keep_translated()
        return out

    async def finish(self) -> list[bytes]:
        if self.stream is None:
            return []
        out = self.stream.finish()
        await self._keep_translated()
        return out

    async def _keep_translated(self) -> None:
        assert self.stream is not None
        if self.stream.final is not None and not self._kept:
            self._kept = True
            await self._answers.keep(self.stream.final)

    async def _keep_native(self, event: bytes) -> None:
        try:
            data = orjson.loads(event_data(event))
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict) and data.get("type") in ("response.completed", "response.incomplete"):
            self._kept = True
            await self._answers.keep(obj(data.get("response")))
