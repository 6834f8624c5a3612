"""An OpenAI chat request as a Gemini generateContent request.

`reasoning_effort` becomes a thinking budget, as Gemini's own OpenAI-compatible endpoint maps it (low 1K,
medium 8K, high 24K tokens; none turns thinking off): a budget is what every thinking model accepts.
Dropped on the way: n > 1 (refused), logprobs, logit_bias, parallel_tool_calls and the OpenAI-only fields.
Tool results name their function (Gemini matches results by name), found from the assistant's tool call ids.
"""

from __future__ import annotations

import mimetypes
from typing import Any

import orjson

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

_TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_GENERATION = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)


def generate_request(body: dict[str, Any]) -> dict[str, Any]:
    single_choice(body)
    system, contents = _contents(body["messages"])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    declarations = _declarations(body.get("tools"))
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = _tool_config(body.get("tool_choice"))
        if choice is not None:
            out["toolConfig"] = {"functionCallingConfig": choice}
    return out


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    limit = max_output_tokens(body)
    if limit is not None:
        config["maxOutputTokens"] = limit
    for openai_name, gemini_name in _GENERATION:
        if body.get(openai_name) is not None:
            config[gemini_name] = body[openai_name]
    stops = stop_list(body.get("stop"))
    if stops:
        config["stopSequences"] = stops
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in _THINKING_BUDGETS:
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGETS[effort]}
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = response_format.get("json_schema")
        if isinstance(schema, dict) and isinstance(schema.get("schema"), dict):
            config["responseJsonSchema"] = schema["schema"]
    return config


def _contents(items: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the tool results that follow
    for i, message in enumerate(items):
        field = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"), f"{field}.content")
            if text:
                system.append(text)
        elif role == "user":
            _append(contents, "user", _user_parts(message.get("content"), f"{field}.content"))
        elif role == "assistant":
            _append(contents, "model", _model_parts(message, field, names))
        elif role == "tool":
            _append(contents, "user", [_function_response(message, field, names)])
        else:
            raise bad_request(f"'{field}.role' must be system, developer, user, assistant or tool.", "invalid_role")
    return system, contents


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    # Gemini wants all function responses of one call turn together.
    append_turn(contents, role, parts, "parts")


def _user_parts(content: Any, field: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise bad_request(f"'{field}' must be a string or an array of content parts.", "invalid_type")
    parts = []
    for i, part in enumerate(content):
        converted = _part(part, f"{field}[{i}]")
        if converted is not None:
            parts.append(converted)
    return parts


def _part(part: Any, field: str) -> dict[str, Any] | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"'{field}.text' must be a string.", "invalid_type")
        return {"text": text} if text else None
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise bad_request(f"'{field}.image_url.url' must be a string.", "invalid_type")
        return _media(url, f"{field}.image_url.url", "image/jpeg")
    if kind == "file":
        file = obj(part.get("file"))
        return _media(str(file.get("file_data") or ""), f"{field}.file.file_data", "application/pdf")
    if kind == "input_audio":
        audio = obj(part.get("input_audio"))
        if not isinstance(audio.get("data"), str):
            raise bad_request(f"'{field}.input_audio.data' must be a base64 string.", "invalid_type")
        return {"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}}
    raise bad_request(f"'{field}.type' {kind!r} is not supported by the Gemini provider.", "unsupported_content")


def _media(url: str, field: str, default_type: str) -> dict[str, Any]:
    inline = data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if url.startswith(("http://", "https://", "gs://")):
        # Gemini fetches file URIs itself; the media type is required, so it is guessed from the name.
        guessed = mimetypes.guess_type(url.split("?", 1)[0])[0]
        return {"fileData": {"mimeType": guessed or default_type, "fileUri": url}}
    raise bad_request(f"'{field}' must be a URL or a base64 data: URL.", "invalid_media_url")


def _model_parts(message: dict[str, Any], field: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.get("content")
    if isinstance(content, list):
        content = [p for p in content if not (isinstance(p, dict) and p.get("type") == "refusal")]
    text = text_of(content, f"{field}.content")
    if text:
        parts.append({"text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise bad_request(f"'{field}.tool_calls' must be an array.", "invalid_type")
    for i, call in enumerate(calls):
        where = f"{field}.tool_calls[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"'{where}' must have a function with a name.", "invalid_tool_call")
        if call.get("id"):
            names[str(call["id"])] = function["name"]
        part: dict[str, Any] = {
            "functionCall": {
                "name": function["name"],
                "args": arguments_object(function.get("arguments"), f"{where}.function.arguments"),
            }
        }
        signature = _thought_signature(call)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _thought_signature(call: dict[str, Any]) -> str | None:
    """Gemini 3 requires the signature of its own function calls back; callers keep it in `extra_content`."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) else None


def _function_response(message: dict[str, Any], field: str, names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    name = names.get(call_id) if isinstance(call_id, str) else None
    if name is None:
        raise bad_request(
            f"'{field}.tool_call_id' must name a tool call of an earlier assistant message.", "unknown_tool_call_id"
        )
    return {"functionResponse": {"name": name, "response": _response(text_of(message.get("content"), field))}}


def _response(text: str) -> dict[str, Any]:
    """Gemini wants an object: a JSON object result is passed as it is, anything else under "output"."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    return value if isinstance(value, dict) else {"output": value}


def _declarations(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise bad_request("'tools' must be an array.", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise bad_request(f"'tools[{i}]' must be a function tool with a name.", "unsupported_tool")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            # parametersJsonSchema takes JSON Schema as OpenAI callers write it (parameters wants an OpenAPI subset).
            declaration["parametersJsonSchema"] = function["parameters"]
        out.append(declaration)
    return out


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_MODES:
        return {"mode": _TOOL_MODES[choice]}
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    raise bad_request("'tool_choice' must be auto, none, required or a function choice.", "invalid_tool_choice")
