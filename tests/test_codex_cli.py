"""Codex CLI as a real client of `/v1/responses`: `codex exec` completes turns through the gateway against the
mock, on a translated pool and on a native one, including a turn in which the model calls a tool and answers.

Codex is installed from npm (pinned in scripts/ensure-clients.sh, into ~/.cache/tollway/npm/, which
`make test` runs first) and runs with a throwaway HOME and CODEX_HOME whose config.toml names the gateway as its model
provider with `wire_api = "responses"`.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM
from fixtures.providers.support import provider_crs
from npm_tools import client_binary


@pytest.fixture(scope="session")
def codex_binary() -> Path:
    """The pinned Codex CLI (scripts/ensure-clients.sh holds the version)."""
    return client_binary("codex")


async def codex_exec(binary: Path, gateway: GatewayHandle, home: Path, prompt: str) -> str:
    """One `codex exec` run against the gateway; its final message (stdout)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        textwrap.dedent(
            f"""
            model = "mock-gpt"
            model_provider = "tollway"

            [model_providers.tollway]
            name = "Tollway"
            base_url = "{gateway.url}/v1"
            env_key = "TOLLWAY_API_KEY"
            wire_api = "responses"
            """
        )
    )
    work = home / "work"
    work.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CODEX_HOME": str(codex_home),
        "TOLLWAY_API_KEY": "sk-alice",
        "NO_COLOR": "1",
    }
    # The gateway and the mock serve from this event loop: the client must not block it.
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "exec",
        "--skip-git-repo-check",
        "-C",
        str(work),
        prompt,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 120)  # a hang guard, not a measurement
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout.decode()


def names_of(tools: list[dict[str, Any]]) -> list[str]:
    return [t.get("name") or t.get("function", {}).get("name") for t in tools]


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_codex_completes_a_turn(
    codex_binary: Path, make_gateway: GatewayFactory, mock_llm: MockLLM, tmp_path: Path, provider: str
) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    await mock_llm.script({"content": "Hello from the gateway."})
    output = await codex_exec(codex_binary, gateway, tmp_path, "Say hello.")
    assert "Hello from the gateway." in output
    (sent,) = await mock_llm.requests()
    body = sent["body"]
    if provider == "openai":
        # What Codex sends today, passed through as it is: developer messages, namespace and hosted tools, no
        # storage, encrypted reasoning, a cache key and client metadata.
        assert sent["path"] == "/v1/responses" and sent["api_key"] == "provider-secret"
        assert body["store"] is False and body["include"] == ["reasoning.encrypted_content"]
        assert body["prompt_cache_key"] and body["client_metadata"] and body["stream"] is True
        assert any(item.get("role") == "developer" for item in body["input"])
        kinds = {tool["type"] for tool in body["tools"]}
        assert {"function", "namespace", "web_search"} <= kinds
        assert body["input"][-1]["content"][0]["text"] == "Say hello."
    else:
        # Translated: developer messages became the system turn, namespaced tools are flattened, hosted ones gone.
        assert sent["path"] == "/v1/chat/completions"
        assert body["messages"][0]["role"] == "system" and body["messages"][-1] == {
            "role": "user",
            "content": "Say hello.",
        }
        names = names_of(body["tools"])
        assert "exec_command" in names and any("__" in name for name in names) and "web_search" not in names


@pytest.mark.parametrize("provider", ["openai-compatible", "openai"])
async def test_codex_runs_a_tool_the_model_asks_for(
    codex_binary: Path, make_gateway: GatewayFactory, mock_llm: MockLLM, tmp_path: Path, provider: str
) -> None:
    gateway = await make_gateway(provider_crs(mock_llm.url, provider))
    await mock_llm.script({"tool_call": {"name": "exec_command", "arguments": {"cmd": "echo tollway-tool-ran"}}})
    await mock_llm.script({"content": "The command ran."})
    output = await codex_exec(codex_binary, gateway, tmp_path, "Run echo, then tell me.")
    assert "The command ran." in output
    _, second = await mock_llm.requests()
    if provider == "openai":
        outputs = [item for item in second["body"]["input"] if item.get("type") == "function_call_output"]
        calls = [item for item in second["body"]["input"] if item.get("type") == "function_call"]
        assert [c["call_id"] for c in calls] == [o["call_id"] for o in outputs] == ["call_mock_1"]
        assert calls[0]["name"] == "exec_command"
    else:
        messages = second["body"]["messages"]
        call = next(m for m in messages if m.get("tool_calls"))["tool_calls"][0]
        assert call["function"]["name"] == "exec_command"
        assert json.loads(call["function"]["arguments"]) == {"cmd": "echo tollway-tool-ran"}
        result = next(m for m in messages if m["role"] == "tool")
        assert result["tool_call_id"] == call["id"] and result["content"]  # whatever the sandbox let it print
