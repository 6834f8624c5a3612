"""The operator's high-availability parts without a cluster: its readiness endpoint."""

from __future__ import annotations

import aiohttp
from tollway_operator.readiness import ReadinessServer


async def test_the_readiness_endpoint_answers_what_the_check_says() -> None:
    from conftest import free_port

    answers = [(False, "listing"), (True, "config published")]

    async def check() -> tuple[bool, str]:
        return answers.pop(0)

    port = free_port()
    server = ReadinessServer(f"http://127.0.0.1:{port}/readyz", check)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for status, reason in ((503, "listing"), (200, "config published")):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    assert response.status == status
                    assert (await response.json())["reason"] == reason
    finally:
        await server.stop()
