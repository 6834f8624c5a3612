"""The Responses API entry (`POST {prefix}/responses`): a Responses request as an OpenAI chat request, plus the
caller's own body for pools that speak the Responses API natively (OpenAI, Azure OpenAI).

`RESPONSES` is the protocol object the gateway front uses. Its `intake` resolves `previous_response_id` against
the response store (the next call carries the whole conversation, on whichever pool serves it, so a chain may
move between providers), converts the request for translated pools (`to_chat`), keeps the body for native ones,
and binds the answer side (`responses_answer`) to this request, because Responses objects echo the request.

Translated pools get what Chat Completions can express. The hosted `web_search` tool becomes chat's
`web_search_options`, which the route's web-search stage takes (the answer side counts it as dropped when no stage
did). Left out there (native pools get everything): the other hosted tools (agents list them on every turn, so
they are dropped and counted rather than refused), reasoning items of earlier turns, `include`,
`prompt_cache_key`, metadata, `text.verbosity`, logprobs and unknown fields. Namespaced function tools are
flattened to `{namespace}__{name}` and named back in answers.
Refused: `background` (the gateway answers in the foreground) and `conversation` (use `previous_response_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..answer import RESPONSES as NAME
from ..call import NativeBody, TextRewrite
from ..errors import GatewayError, error_body
from ..providers.chat import obj
from .base import CallerContext, Intake
from .responses_answer import WEB_SEARCH_REQUESTED, ResponsesAnswers, ToolNames

__all__ = ["RESPONSES", "Conversion", "to_chat"]

_HOSTED_CHOICES = frozenset({"auto", "none", "required"})
_SYSTEM_ROLES = frozenset({"system", "developer"})  # chat has one such role everywhere: system


def _invalid(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code, type="invalid_request_error")


@dataclass(slots=True)
class Conversion:
    """What `to_chat` made of a request beyond the chat body: dropped parts (for the log) and tool names."""

    dropped: list[str] = field(default_factory=list)  # "tool:file_search", "item:reasoning", ...
    names: ToolNames = field(default_factory=dict)  # flattened chat name -> (namespace, name)
    search: dict[str, Any] | None = None  # the hosted web_search tool as chat's web_search_options

    def drop(self, what: str) -> None:
        if what not in self.dropped:
            self.dropped.append(what)


def input_items(value: Any) -> list[dict[str, Any]]:
    """The request's `input` as a list of items (a string is one user message, as the Responses API stores it)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _invalid("'input' must be a string or an array of input items.", "invalid_type")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _invalid(f"'input[{i}]' must be an object.", "invalid_type")
    return list(value)


def is_web_search(kind: str) -> bool:
    """The hosted web-search tool under any of its names (web_search, web_search_preview, dated versions)."""
    return kind in ("web_search", "web_search_preview") or kind.startswith(("web_search_preview_", "web_search_2"))


def _search_options(tool: dict[str, Any]) -> dict[str, Any]:
    """The tool's settings in chat's `web_search_options` shape (what the web-search stage reads)."""
    options: dict[str, Any] = {}
    size = tool.get("search_context_size")
    if size in ("low", "medium", "high"):
        options["search_context_size"] = size
    location = tool.get("user_location")
    if isinstance(location, dict):
        place = {k: v for k in ("city", "country", "region", "timezone") if isinstance(v := location.get(k), str) and v}
        if place:
            options["user_location"] = {"type": "approximate", "approximate": place}
    return options


def flat_name(namespace: str, name: str) -> str:
    return f"{namespace}__{name}"


def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], Conversion]:
    """The request (its `input` already holding any earlier turns) as a chat body; 400 naming what is malformed."""
    conversion = Conversion()
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):  # instructions given as input items
        _append_items(messages, input_items(instructions), "instructions", conversion)
    elif instructions is not None and not isinstance(instructions, str):
        raise _invalid("'instructions' must be a string.", "invalid_type")
    _append_items(messages, input_items(body.get("input")), "input", conversion)
    if not any(m["role"] != "system" for m in messages):
        raise _invalid("'input' is required: give a string or at least one input item.", "missing_input")
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise _invalid("'max_output_tokens' must be a positive integer.", "invalid_type")
        out["max_tokens"] = limit  # the name every OpenAI-compatible server knows
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    tools = _tools(body.get("tools"), conversion)
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), conversion)
        if choice is not None:
            out["tool_choice"] = choice
        if isinstance(body.get("parallel_tool_calls"), bool):
            out["parallel_tool_calls"] = body["parallel_tool_calls"]
    if conversion.search is not None:
        out["web_search_options"] = conversion.search
    response_format = _response_format(obj(body.get("text")).get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    effort = obj(body.get("reasoning")).get("effort")
    if isinstance(effort, str):
        out["reasoning_effort"] = effort
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("'stream' must be a boolean.", "invalid_type")
    if stream:
        # The Responses stream reports usage in its last event; the OpenAI side only does when asked.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, conversion


# -- input items ------------------------------------------------------------------------------------------------


def _append_items(
    messages: list[dict[str, Any]], items: list[dict[str, Any]], where: str, conversion: Conversion
) -> None:
    images: list[dict[str, Any]] = []  # from tool outputs: chat tool messages hold text only, so they follow
    for i, item in enumerate(items):
        field = f"{where}[{i}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind != "function_call_output" and images:
            messages.append({"role": "user", "content": images})
            images = []
        if kind == "message":
            _message(messages, item, field, conversion)
        elif kind == "function_call":
            _function_call(messages, item, field, conversion)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"'{field}.call_id' is required.", "invalid_function_call_output")
            text, parts = _output(item.get("output"), f"{field}.output", conversion)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": text})
            images.extend(parts)
        else:
            conversion.drop(f"item:{kind}")  # reasoning, hosted tool calls, item references: no chat form
    if images:
        messages.append({"role": "user", "content": images})


def _message(messages: list[dict[str, Any]], item: dict[str, Any], field: str, conversion: Conversion) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in _SYSTEM_ROLES:
        text = _text(content, f"{field}.content")
        if messages and messages[-1]["role"] == "system" and isinstance(messages[-1]["content"], str):
            messages[-1] = {"role": "system", "content": f"{messages[-1]['content']}\n\n{text}"}  # one system turn
        elif text:
            messages.append({"role": "system", "content": text})
    elif role == "user":
        if isinstance(content, str):
            messages.append({"role": "user", "content": content})
            return
        parts = _user_parts(content, f"{field}.content", conversion)
        if len(parts) == 1 and parts[0]["type"] == "text":
            messages.append({"role": "user", "content": parts[0]["text"]})
        elif parts:
            messages.append({"role": "user", "content": parts})
    elif role == "assistant":
        messages.append({"role": "assistant", "content": _text(content, f"{field}.content")})
    else:
        raise _invalid(f"'{field}.role' must be user, assistant, system or developer.", "invalid_role")


def _text(content: Any, field: str) -> str:
    """Text-only content: a string or text parts (input_text, output_text, refusal)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _invalid(f"'{field}' must be a string or an array of content parts.", "invalid_content")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise _invalid(f"'{field}[{i}]' must be a text part.", "invalid_content")
    return "".join(texts)


def _user_parts(content: Any, field: str, conversion: Conversion) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        raise _invalid(f"'{field}' must be a string or an array of content parts.", "invalid_content")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        where = f"{field}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "text"):
            if not isinstance(part.get("text"), str):
                raise _invalid(f"'{where}.text' must be a string.", "invalid_type")
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                conversion.drop("part:input_image.file_id")  # an uploaded file only the provider can read
                continue
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if isinstance(part.get(k), str)}
            if "file_data" in file or "file_id" in file:
                parts.append({"type": "file", "file": file})
            else:
                conversion.drop("part:input_file.file_url")
        else:
            raise _invalid(f"'{where}.type' {kind!r} is not supported in a user message.", "unsupported_content")
    return parts


def _output(output: Any, field: str, conversion: Conversion) -> tuple[str, list[dict[str, Any]]]:
    """A function call's output: its text, and the images that must follow it in a user turn."""
    if isinstance(output, str):
        return output, []
    if not isinstance(output, list):
        raise _invalid(f"'{field}' must be a string or an array of content parts.", "invalid_function_call_output")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for part in _user_parts(output, field, conversion):
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return "\n".join(texts), images


def _function_call(messages: list[dict[str, Any]], item: dict[str, Any], field: str, conversion: Conversion) -> None:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise _invalid(f"'{field}' must have a call_id and a name.", "invalid_function_call")
    if not isinstance(arguments, str):
        raise _invalid(f"'{field}.arguments' must be a JSON string.", "invalid_type")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace:
        name = flat_name(namespace, name)
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    # Calls of one turn (and the text before them) are one chat assistant message.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


# -- tools and formats ------------------------------------------------------------------------------------------


def _tools(tools: Any, conversion: Conversion) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.", "invalid_type")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            out.append(_function(tool, None, f"tools[{i}]", conversion))
        elif kind == "namespace":
            name = tool.get("name")
            inner = tool.get("tools")
            if not isinstance(name, str) or not name or not isinstance(inner, list):
                raise _invalid(f"'tools[{i}]' must be a namespace with a name and tools.", "invalid_tool")
            for j, member in enumerate(inner):
                if isinstance(member, dict) and member.get("type", "function") == "function":
                    out.append(_function(member, name, f"tools[{i}].tools[{j}]", conversion))
                else:
                    conversion.drop(f"tool:{member.get('type') if isinstance(member, dict) else None}")
        elif isinstance(kind, str) and is_web_search(kind):
            conversion.search = _search_options(tool)  # the route's web-search stage takes it from here
        elif isinstance(kind, str):
            conversion.drop(f"tool:{kind}")  # hosted tools (file_search, ...) and custom tools
        else:
            raise _invalid(f"'tools[{i}].type' is required.", "invalid_tool")
    return out


def _function(tool: dict[str, Any], namespace: str | None, field: str, conversion: Conversion) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"'{field}.name' is required.", "invalid_tool")
    function: dict[str, Any] = {"name": flat_name(namespace, name) if namespace else name}
    if namespace:
        conversion.names[function["name"]] = (namespace, name)
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is True:
        function["strict"] = True
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, conversion: Conversion) -> Any:
    if choice is None or (isinstance(choice, str) and choice in _HOSTED_CHOICES):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace")
        name = flat_name(namespace, choice["name"]) if isinstance(namespace, str) and namespace else choice["name"]
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools" and isinstance(choice.get("mode"), str) and choice["mode"] in _HOSTED_CHOICES:
        return choice["mode"]  # the provider sees every tool; the mode still applies
    if isinstance(kind, str) and is_web_search(kind):
        return None  # forcing the search: web_search_options already asks the stage for one
    if isinstance(kind, str):
        conversion.drop(f"tool_choice:{kind}")  # a hosted tool, dropped with it
        return None
    raise _invalid("'tool_choice' must be auto, none, required or a function choice.", "invalid_tool_choice")


def _response_format(format: Any) -> dict[str, Any] | None:
    kind = format.get("type") if isinstance(format, dict) else None
    if kind == "json_schema":
        schema = {k: format[k] for k in ("name", "description", "schema", "strict") if format.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


# -- the native body, as stages change it ----------------------------------------------------------------------


class ResponsesDialect:
    """How stage edits apply to a Responses request body (`NativeDialect`)."""

    name = NAME

    def add_messages(
        self, body: dict[str, Any], prepend: list[dict[str, str]], append: list[dict[str, str]]
    ) -> dict[str, Any]:
        def item(message: dict[str, str]) -> dict[str, Any]:
            return {"type": "message", "role": message["role"], "content": message["content"]}

        items = [*map(item, prepend), *input_items(body.get("input")), *map(item, append)]
        return {**body, "input": items}

    def rewrite_texts(self, body: dict[str, Any], rewrite: TextRewrite) -> dict[str, Any]:
        out = dict(body)
        if isinstance(body.get("instructions"), str):
            out["instructions"] = rewrite("system", body["instructions"])
        value = body.get("input")
        if isinstance(value, str):
            out["input"] = rewrite("user", value)
        elif isinstance(value, list):
            out["input"] = [_rewrite_item(item, rewrite) for item in value]
        return out


def _rewrite_item(item: Any, rewrite: TextRewrite) -> Any:
    if not isinstance(item, dict):
        return item
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        return {**item, "content": _rewrite_content(str(item.get("role", "")), item.get("content"), rewrite)}
    if kind == "function_call_output":
        return {**item, "output": _rewrite_content("tool", item.get("output"), rewrite)}
    return item


def _rewrite_content(role: str, content: Any, rewrite: TextRewrite) -> Any:
    if isinstance(content, str):
        return rewrite(role, content)
    if isinstance(content, list):
        return [
            {**part, "text": rewrite(role, part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    return content


DIALECT = ResponsesDialect()


# -- the entry --------------------------------------------------------------------------------------------------


class ResponsesProtocol:
    """The Responses API as a caller's protocol. Answers are written by a `ResponsesAnswers` bound to each request;
    errors before that (a 401, a 413) are OpenAI JSON from here."""

    name = NAME

    async def intake(self, body: dict[str, Any], caller: CallerContext) -> Intake:
        if body.get("background") is True:
            raise _invalid("'background' responses are not supported by this gateway.", "unsupported_parameter")
        if body.get("conversation") is not None:
            raise _invalid(
                "'conversation' is not supported by this gateway; continue with 'previous_response_id'.",
                "unsupported_parameter",
            )
        items = input_items(body.get("input"))
        history: list[dict[str, Any]] = []
        native = body
        previous = body.get("previous_response_id")
        if previous is not None:
            if not isinstance(previous, str) or not previous:
                raise _invalid("'previous_response_id' must be a response id.", "invalid_type")
            stored = await caller.responses.get(caller.consumer, previous)
            if stored is None:
                message = f"Previous response with id '{previous}' not found."
                raise GatewayError(404, message, "previous_response_not_found")
            history = stored.conversation()
            # Whichever pool serves this call may never have seen the id: the conversation goes along explicitly.
            native = {k: v for k, v in body.items() if k != "previous_response_id"}
            native["input"] = [*history, *items]
        chat, conversion = to_chat({**body, "input": [*history, *items]})
        for what in conversion.dropped:
            kind, _, detail = what.partition(":")
            metrics.RESPONSES_DROPPED.labels(kind, detail).inc()
        record: dict[str, Any] = {"dropped": conversion.dropped} if conversion.dropped else {}
        if conversion.search is not None:
            record["web_search"] = WEB_SEARCH_REQUESTED  # the answer side learns whether a stage took it
        notes = {"responses": record} if record else None
        answers = ResponsesAnswers(body, [*history, *items], conversion.names, caller, notes)
        return Intake(chat, NativeBody(DIALECT, native), answers, notes)

    def error_body(self, status: int, message: str, type: str, code: str | None) -> bytes:
        return error_body(message, type, code)


RESPONSES = ResponsesProtocol()
