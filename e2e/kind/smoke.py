"""Smoke tests against an installed gateway: chat, stream, 401 and a rate limit. Usage: smoke.py BASE_URL"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

KEY = {"Authorization": "Bearer sk-tollway-smoke"}


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}


async def main(base: str) -> None:
    url = f"{base}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=chat("mock-chat"), headers=KEY) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["choices"][0]["message"]["content"]
            print("chat: ok")
        async with session.post(url, json=chat("mock-stream", stream=True), headers=KEY) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            body = await response.text()
            assert body.rstrip().endswith("data: [DONE]"), body[-200:]
            print("stream: ok")
        async with session.post(url, json=chat("mock-chat")) as response:
            assert response.status == 401 and (await response.json())["error"]["code"] == "missing_api_key"
            print("401: ok")
        statuses = []
        for _ in range(4):
            async with session.post(url, json=chat("mock-limited"), headers=KEY) as response:
                statuses.append(response.status)
                if response.status == 429:
                    error = (await response.json())["error"]
                    assert error["message"] == "Smoke-test budget used up." and response.headers["Retry-After"]
        assert statuses == [200, 200, 200, 429], statuses
        print("rate limit: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
