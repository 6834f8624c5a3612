"""An OpenAI chat request as an Anthropic Messages request.

Dropped on the way (Anthropic has no equivalent): n > 1 (refused), logprobs, seed, presence/frequency penalties,
logit_bias, response_format and the OpenAI-only fields (store, service_tier, reasoning_effort, ...).
"""

from __future__ import annotations

from typing import Any

from .chat import (
    append_turn,
    arguments_object,
    bad_request,
    data_url,
    max_output_tokens,
    obj,
    single_choice,
    stop_list,
    text_of,
)

# Anthropic requires max_tokens; OpenAI callers usually leave it out.
DEFAULT_MAX_TOKENS = 4096

_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}


def messages_request(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    single_choice(body)
    system, messages = _messages(body["messages"])
    out: dict[str, Any] = {"model": model, "max_tokens": max_output_tokens(body) or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    out["messages"] = messages
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = stop_list(body.get("stop"))
    if stops:
        out["stop_sequences"] = stops
    if stream:
        out["stream"] = True
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _messages(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(items):
        field = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"), f"{field}.content")
            if text:
                system.append({"type": "text", "text": text})
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), f"{field}.content"))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, field))
        elif role == "tool":
            _append(out, "user", [_tool_result(message, field)])
        else:
            raise bad_request(f"'{field}.role' must be system, developer, user, assistant or tool.", "invalid_role")
    return system, out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Tool results of one assistant turn must share one user message.
    append_turn(out, role, blocks, "content")


def _user_blocks(content: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"'{field}' must be a string or an array of content parts.", "invalid_type")
    blocks = []
    for i, part in enumerate(content):
        block = _part(part, f"{field}[{i}]")
        if block is not None:
            if isinstance(part.get("cache_control"), dict):
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
    return blocks


def _part(part: Any, field: str) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"'{field}.text' must be a string.", "invalid_type")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise bad_request(f"'{field}.image_url.url' must be a string.", "invalid_type")
        return {"type": "image", "source": _source(url, f"{field}.image_url.url")}
    if kind == "file":
        file = obj(part.get("file"))
        inline = data_url(file.get("file_data") or "")
        if inline is None:
            raise bad_request(f"'{field}.file.file_data' must be a base64 data: URL.", "unsupported_content")
        media_type, payload = inline
        return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": payload}}
    raise bad_request(f"'{field}.type' {kind!r} is not supported by the Anthropic provider.", "unsupported_content")


def _source(url: str, field: str) -> dict[str, Any]:
    inline = data_url(url)
    if inline is not None:
        return {"type": "base64", "media_type": inline[0], "data": inline[1]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise bad_request(f"'{field}' must be an http(s) URL or a base64 data: URL.", "invalid_image_url")


def _assistant_blocks(message: dict[str, Any], field: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):  # text and refusal parts; a refusal was the model's own words
        content = [_refusal_as_text(p) for p in content]
    text = text_of(content, f"{field}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{field}.tool_calls' must be an array.", "invalid_type")
    for i, call in enumerate(calls):
        where = f"{field}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not call.get("id"):
            raise bad_request(f"'{where}' must have an id and a function with a name.", "invalid_tool_call")
        arguments = arguments_object(function.get("arguments"), f"{where}.function.arguments")
        blocks.append({"type": "tool_use", "id": str(call["id"]), "name": function["name"], "input": arguments})
    return blocks


def _refusal_as_text(part: Any) -> Any:
    if isinstance(part, dict) and part.get("type") == "refusal":
        return {"type": "text", "text": str(part.get("refusal") or "")}
    return part


def _tool_result(message: dict[str, Any], field: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad_request(f"'{field}.tool_call_id' is required for a tool message.", "missing_tool_call_id")
    return {"type": "tool_result", "tool_use_id": call_id, "content": text_of(message.get("content"), field)}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"'tools[{i}]' must be a function tool with a name.", "unsupported_tool")
        converted: dict[str, Any] = {
            "name": function["name"],
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str) and choice in _TOOL_CHOICES:
        result = {"type": _TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise bad_request("'tool_choice' must be auto, none, required or a function choice.", "invalid_tool_choice")
    if result is not None and parallel is False and result["type"] != "none":
        result["disable_parallel_tool_use"] = True
    return result
