"""Claude Code itself as a client of the gateway's Anthropic-compatible entry.

The real CLI (pinned in scripts/ensure-clients.sh) runs `claude -p` in print mode with a throwaway HOME against a gateway process in front
of the mock LLM, and must complete its turn: through translation (an OpenAI-compatible pool), through native
pass-through (an Anthropic pool: the provider gets the request as sent), and with a tool call, where the mock asks
Claude Code to read a file and then answers from the tool result.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import MockLLM, spawn_gateway, write_crs
from npm_tools import client_binary

REPLY = "Hello from the mock, through the gateway."

CRS = {
    "pool.yaml": """
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: mock, namespace: default}}
        spec:
          provider: {provider}
          baseURL: {base}
          keys: [{{secretRef: {{name: mock-keys}}}}]
          timeouts: {{connect: 2s, firstByte: 20s, idle: 20s}}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {{name: mock-keys, namespace: default}}
        stringData: {{key: upstream-key}}
    """,
    "route.yaml": """
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {name: code, namespace: default}
        spec:
          rules:
            # Claude Code also asks small models for side tasks; every name it uses lands on the mock.
            - models: [mock-gpt, "claude-*"]
              backends: [{pool: mock}]
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: Consumer
        metadata: {name: dev, namespace: default}
        spec: {credentials: [{secretRef: {name: dev-key}}]}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: dev-key, namespace: default}
        stringData: {apiKey: sk-claude-code-test}
    """,
}


@pytest.fixture(scope="module")
def claude() -> Path:
    """The pinned Claude Code (scripts/ensure-clients.sh holds the version)."""
    return client_binary("claude")


async def start_gateway(tmp_path: Path, mock_llm: MockLLM, provider: str) -> tuple[asyncio.subprocess.Process, str]:
    base = f"{mock_llm.url}/v1" if provider == "openai-compatible" else mock_llm.url
    files = {
        name: text.format(provider=provider, base=base) if name == "pool.yaml" else text for name, text in CRS.items()
    }
    write_crs(tmp_path / "crs", files)
    return await spawn_gateway(tmp_path / "crs")


async def run_claude(claude: Path, gateway: str, workdir: Path, prompt: str, *args: str) -> tuple[int, str]:
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_API_KEY": "sk-claude-code-test",  # a consumer key of the gateway, not an Anthropic key
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    process = await asyncio.create_subprocess_exec(
        str(claude),
        "-p",
        prompt,
        "--model",
        "mock-gpt",
        *args,
        cwd=workdir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail("claude -p did not finish within 120 s")
    return process.returncode or 0, out.decode(errors="replace")


def main_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns of the conversation (Claude Code may also send side requests without tools)."""
    return [r for r in requests if r["body"].get("tools")]


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
async def test_claude_code_completes_a_turn(claude: Path, tmp_path: Path, mock_llm: MockLLM, provider: str) -> None:
    process, gateway = await start_gateway(tmp_path, mock_llm, provider)
    try:
        await mock_llm.script({"content": REPLY}, times=20)
        code, out = await run_claude(claude, gateway, tmp_path, "Say hello")
    finally:
        process.terminate()
        await process.wait()
    assert code == 0, out
    assert REPLY in out
    (turn, *_) = main_requests(await mock_llm.requests())
    body = turn["body"]
    assert body["stream"] is True
    if provider == "anthropic":
        # Native pass-through: the provider got Claude Code's request as sent, prompt caching and thinking included.
        assert any(block.get("cache_control") for block in body["system"])
        assert body["thinking"]["type"] == "adaptive" and "context_management" in body
        assert "claude-code" in turn["headers"]["anthropic-beta"]
        assert any(t.get("defer_loading") for t in body["tools"])
        return
    # Translated: one system message first, the tools as functions.
    assert body["messages"][0]["role"] == "system" and "Claude" in body["messages"][0]["content"]
    assert all(m["role"] != "system" for m in body["messages"][1:])
    assert {t["type"] for t in body["tools"]} == {"function"}


async def test_claude_code_runs_a_tool_the_mock_asks_for(claude: Path, tmp_path: Path, mock_llm: MockLLM) -> None:
    secret_file = tmp_path / "note.txt"
    secret_file.write_text("the answer is forty-two\n")
    process, gateway = await start_gateway(tmp_path, mock_llm, "openai-compatible")
    try:
        arguments = json.dumps({"file_path": str(secret_file)})
        await mock_llm.script({"tool_call": {"name": "Read", "arguments": arguments}}, times=1)
        await mock_llm.script({"content": "The note says forty-two."}, times=20)
        code, out = await run_claude(claude, gateway, tmp_path, "What does note.txt say?", "--allowedTools", "Read")
    finally:
        process.terminate()
        await process.wait()
    assert code == 0, out
    assert "The note says forty-two." in out
    turns = main_requests(await mock_llm.requests())
    assert len(turns) >= 2
    # The second turn carries the tool's result back, as an OpenAI tool message answering the call.
    second = turns[1]["body"]["messages"]
    assistant = next(m for m in second if m["role"] == "assistant" and m.get("tool_calls"))
    call_id = assistant["tool_calls"][0]["id"]
    result = next(m for m in second if m["role"] == "tool" and m["tool_call_id"] == call_id)
    assert "forty-two" in json.dumps(result["content"])
