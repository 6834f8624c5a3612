"""The Anthropic-compatible entry (`POST {prefix}/messages`): a Messages request as an OpenAI chat request.

`ANTHROPIC` is the protocol object the gateway front uses; answers go back through `anthropic_answer`. It accepts
what the current Messages API accepts (what Claude Code sends, for one) and maps it as follows:

* `system` as a string or text blocks, and `system`-role entries inside `messages`, become one system message at
  the front, in order;
* `thinking: {type: enabled, budget_tokens}` becomes `reasoning_effort` (under 4,096 tokens low, under 16,384
  medium, else high); `adaptive` and `disabled` leave the target's default, so a model without reasoning is
  never sent a parameter it refuses; `output_config`, `context_management`, `cache_control`, `metadata` (but
  `user_id`, which becomes `user`), `top_k`, `service_tier` and unknown top-level fields are ignored;
* tools are OpenAI functions; deferred tools (`defer_loading: true`) are left out, since nothing can load them
  later on a translated target; thinking blocks in the history are left out.

What a translated target truly cannot express is refused with a 400 that names the field: server tools
(`web_search_*`, `bash_*`, ...), and content blocks other than text, images, documents, tool use and results.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson

from ..call import NativeBody, TextRewrite
from ..errors import GatewayError
from ..fields import ANTHROPIC_NUMBERS, check_numbers
from ..providers.chat import obj
from .anthropic_answer import AnthropicAnswers
from .base import CallerContext, ConvertingProtocol, Intake

__all__ = ["ANTHROPIC", "to_openai_request"]

_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})  # the model's own reasoning: nothing to send on


def _invalid(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code, type="invalid_request_error")


# Content only a translation cannot express (server tools, block types an OpenAI message has no place for) is
# refused when the request is translated, but an Anthropic pool would take it as it is: while `intake` builds
# the chat body for a native-capable request, such content is left out of that body and its refusal kept for
# the translated pools (`Call.untranslatable`), instead of failing the request up front.
_DEFERRED: ContextVar[list[GatewayError] | None] = ContextVar("anthropic_deferred", default=None)


def _unsupported(message: str, code: str) -> None:
    """Refuse what a translated target cannot express, or (during intake) defer the refusal and skip it."""
    error = _invalid(message, code)
    deferred = _DEFERRED.get()
    if deferred is None:
        raise error
    deferred.append(error)


def to_openai_request(body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty array.", "invalid_messages")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("'max_tokens' is required.", "invalid_max_tokens")
    check_numbers(body, ANTHROPIC_NUMBERS)
    system = _system_texts(body.get("system"), "system")
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") == "system":
            system.extend(_system_texts(message.get("content"), f"messages[{i}].content"))
        else:
            turns.extend(_message(message, f"messages[{i}]"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": turns}
    if system:
        turns.insert(0, {"role": "system", "content": "\n\n".join(system)})
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
        out["user"] = metadata["user_id"][:256]
    effort = _reasoning_effort(body.get("thinking"))
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def _system_texts(system: Any, field: str) -> list[str]:
    """The texts of a system prompt: a string or an array of text blocks (cache_control and the like ignored)."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [system]
    if isinstance(system, list):
        texts = []
        for i, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise _invalid(f"'{field}[{i}]' must be a text block.", "invalid_system")
            texts.append(block["text"])
        return texts
    raise _invalid(f"'{field}' must be a string or an array of text blocks.", "invalid_system")


def _reasoning_effort(thinking: Any) -> str | None:
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool):
        return "medium"
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _message(message: Any, field: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise _invalid(f"'{field}' must be an object.", "invalid_type")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _invalid(f"'{field}.role' must be user, assistant or system.", "invalid_role")
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
        elif (part := _part(block, where)) is not None:
            parts.append(part)
    out = tools
    if len(parts) == 1 and parts[0]["type"] == "text":
        out.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        out.append({"role": "user", "content": parts})
    return out


def _part(block: Any, field: str) -> dict[str, Any] | None:
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
    _unsupported(f"'{field}.type' {kind!r} is not supported by this gateway.", "unsupported_content")
    return None


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
        if part is None:
            continue
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
            _unsupported(f"'{where}.type' {kind!r} is not supported in an assistant message.", "unsupported_content")
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
        if isinstance(tool, dict) and tool.get("defer_loading") is True:
            continue  # loaded on demand by a server-side tool search, which a translated target does not have
        if (
            not isinstance(tool, dict)
            or tool.get("type") not in (None, "custom")
            or not isinstance(tool.get("name"), str)
        ):
            kind = tool.get("type") if isinstance(tool, dict) else None
            _unsupported(
                f"'tools[{i}]' ({kind!r}) is an Anthropic server tool, which this model's provider cannot run; "
                "only custom tools with a name and an input_schema can be translated.",
                "unsupported_tool",
            )
            continue
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


# The caller's headers a native pass-through keeps: the API version it speaks and the betas it asked for.
_PASSED_HEADERS = ("anthropic-version", "anthropic-beta")
_TURN_ROLES = ("user", "assistant")


class AnthropicProtocol(AnthropicAnswers, ConvertingProtocol):
    """The Messages API as a caller's protocol: this module reads its requests, `AnthropicAnswers` writes answers.

    Every request also keeps the caller's own body, so an Anthropic pool gets it as sent (native pass-through);
    stage edits reach that body through `add_messages` and `rewrite_texts`.
    """

    name = "anthropic"

    def to_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return to_openai_request(body)

    async def intake(self, body: dict[str, Any], caller: CallerContext) -> Intake:
        deferred: list[GatewayError] = []
        token = _DEFERRED.set(deferred)
        try:
            chat = to_openai_request(body)
        finally:
            _DEFERRED.reset(token)
        headers = tuple((h, caller.headers[h]) for h in _PASSED_HEADERS if h in caller.headers)
        native = NativeBody(self, body, headers, untranslatable=deferred[0] if deferred else None)
        return Intake(chat, native, self)

    def add_messages(
        self, body: dict[str, Any], prepend: list[dict[str, str]], append: list[dict[str, str]]
    ) -> dict[str, Any]:
        """System and developer messages join `system` (before or after the caller's blocks, whose cache_control
        stays where it was); user and assistant messages join `messages`."""

        def system_blocks(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [{"type": "text", "text": m["content"]} for m in messages if m["role"] in ("system", "developer")]

        def turns(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [
                {"role": m["role"], "content": m["content"]} for m in messages if m["role"] in ("user", "assistant")
            ]

        out = dict(body)
        before, after = system_blocks(prepend), system_blocks(append)
        if before or after:
            system = body.get("system")
            caller = [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []
            out["system"] = [*before, *caller, *after]
        out["messages"] = [*turns(prepend), *body.get("messages", []), *turns(append)]
        return out

    def rewrite_texts(self, body: dict[str, Any], rewrite: TextRewrite) -> dict[str, Any]:
        """Every text the caller wrote: the system prompt, message texts and tool results."""
        out = dict(body)
        if isinstance(body.get("system"), str):
            out["system"] = rewrite("system", body["system"])
        elif isinstance(body.get("system"), list):
            out["system"] = [_rewrite_block(b, "system", rewrite) for b in body["system"]]
        messages = []
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                messages.append(message)
                continue
            role = str(message.get("role", ""))
            content = message.get("content")
            if isinstance(content, str):
                message = {**message, "content": rewrite(role, content)}
            elif isinstance(content, list):
                message = {**message, "content": [_rewrite_block(b, role, rewrite) for b in content]}
            messages.append(message)
        out["messages"] = messages
        return out


def _rewrite_block(block: Any, role: str, rewrite: TextRewrite) -> Any:
    if not isinstance(block, dict):
        return block
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return {**block, "text": rewrite(role, block["text"])}
    if block.get("type") == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return {**block, "content": rewrite("tool", content)}
        if isinstance(content, list):
            return {**block, "content": [_rewrite_block(b, "tool", rewrite) for b in content]}
    return block


ANTHROPIC = AnthropicProtocol()
