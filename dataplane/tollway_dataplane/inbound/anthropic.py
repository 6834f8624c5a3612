"""The Anthropic-compatible entry (`POST {prefix}/messages`): a Messages request as an OpenAI chat request.

Answers go back through `EGRESS` (see `anthropic_egress`). Dropped on the way in: top_k, thinking, cache_control,
service_tier and container fields; thinking blocks in the history; citations. Server tools (web search, ...) and
unknown content blocks are refused with a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import GatewayError
from ..fields import ANTHROPIC_NUMBERS, check_numbers
from ..providers.chat import obj
from .anthropic_egress import EGRESS

__all__ = ["EGRESS", "to_openai_request"]

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # the model's own reasoning: nothing to send on


def _invalid(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code, type="invalid_request_error")


def to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array.", "invalid_messages")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("'max_tokens' is required.", "invalid_max_tokens")
    check_numbers(body, ANTHROPIC_NUMBERS)
    out: dict[str, Any] = {"model": body.get("model"), "messages": _system(body.get("system"))}
    for i, message in enumerate(messages):
        out["messages"].extend(_message(message, f"messages[{i}]"))
    out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _invalid("'stop_sequences' must be an array of strings.", "invalid_type")
        if stops:
            out["stop"] = stops
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("'stream' must be a boolean.", "invalid_type")
    if stream:
        # The Anthropic stream reports usage at its end; the OpenAI side only does when asked.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        _tool_choice(body.get("tool_choice"), out)  # OpenAI refuses a tool_choice without tools
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        texts = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise _invalid(f"'system[{i}]' must be a text block.", "invalid_system")
            texts.append(block["text"])
        return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []
    raise _invalid("'system' must be a string or an array of text blocks.", "invalid_system")


def _message(message: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise _invalid(f"'{field}' must be an object.", "invalid_type")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"'{field}.role' must be user or assistant.", "invalid_role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(f"'{field}.content' must be a string or an array of content blocks.", "invalid_content")
    if role == "user":
        return _user(content, f"{field}.content")
    return [_assistant(content, f"{field}.content")]


def _user(blocks: list[Any], field: str) -> list[dict[str, Any]]:
    """Tool results become OpenAI tool messages, which must come right after the assistant's calls."""
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        where = f"{field}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            text, images = _tool_result_content(block.get("content"), f"{where}.content")
            tool_use_id = block.get("tool_use_id")
            if not isinstance(tool_use_id, str) or not tool_use_id:
                raise _invalid(f"'{where}.tool_use_id' is required.", "invalid_tool_result")
            tools.append({"role": "tool", "tool_call_id": tool_use_id, "content": text})
            parts.extend(images)  # OpenAI tool messages hold text only: images follow in the user turn
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            parts.append(_part(block, where))
    out = tools
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _part(block: Any, field: str) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _invalid(f"'{field}.text' must be a string.", "invalid_type")
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _source_url(block.get("source"), f"{field}.source")}}
    if kind == "document":
        source = obj(block.get("source"))
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            return {"type": "text", "text": source["data"]}
        file: dict[str, Any] = {"file_data": _source_url(source, f"{field}.source")}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    raise _invalid(f"'{field}.type' {kind!r} is not supported by this gateway.", "unsupported_content")


def _source_url(source: Any, field: str) -> str:
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return f"data:{source.get('media_type') or 'application/octet-stream'};base64,{source['data']}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return str(source["url"])
    raise _invalid(f"'{field}' must be a base64 or url source.", "invalid_source")


def _tool_result_content(content: Any, field: str) -> tuple[str, list[dict[str, Any]]]:
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise _invalid(f"'{field}' must be a string or an array of blocks.", "invalid_tool_result")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        part = _part(block, f"{field}[{i}]")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return "\n".join(texts), images


def _assistant(blocks: list[Any], field: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        where = f"{field}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _invalid(f"'{where}' must have an id and a name.", "invalid_tool_use")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
        elif kind not in _SKIPPED_BLOCKS:
            raise _invalid(f"'{where}.type' {kind!r} is not supported in an assistant message.", "unsupported_content")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _invalid("'tools' must be an array.", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        if (
            not isinstance(tool, dict)
            or tool.get("type") not in (None, "custom")
            or not isinstance(tool.get("name"), str)
        ):
            raise _invalid(
                f"'tools[{i}]' must be a custom tool with a name; server tools are not supported.", "unsupported_tool"
            )
        function: dict[str, Any] = {"name": tool["name"]}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, out: dict[str, Any]) -> None:
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _invalid("'tool_choice.type' must be auto, any, tool or none.", "invalid_tool_choice")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
