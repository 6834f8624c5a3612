"""The `webhook` checker: a guardrail server speaking LiteLLM's generic guardrail API, so existing servers plug in.

    POST url  {"input_type": "request" | "response", "texts": [...], "model": ..., "structured_messages": [...],
               "request_data": {"request_id", "consumer", "route"}, "litellm_call_id": request id}
    answer    {"action": "NONE" | "BLOCKED" | "GUARDRAIL_INTERVENED", "blocked_reason": ..., "texts": [...]}

BLOCKED blocks (category `blocked`); GUARDRAIL_INTERVENED replaces the texts with the server's (a Presidio
wrapper's masks, say), one for one. With `action: audit` both are only recorded. An optional bearer token comes
from a Secret through the secrets document.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
import orjson
from tollway_contract.model import Checker, WebhookSettings

from ..poolclient import IDENTITY
from .verdict import CheckContext, Result


class WebhookChecker:
    remote = True

    def __init__(self, checker: Checker, secrets: Mapping[str, str], http: Callable[[], aiohttp.ClientSession]):
        settings = checker.settings
        assert isinstance(settings, WebhookSettings)
        self.config = checker
        self.name = checker.name
        self._url = settings.url
        self._http = http
        self._missing = settings.token is not None and not secrets.get(settings.token)
        token = secrets.get(settings.token) if settings.token else None
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": IDENTITY}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never show the token
        return f"WebhookChecker(name={self.name!r}, url={self._url!r})"

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        if not any(texts):
            return Result()
        if self._missing:
            return Result(error="missing-credentials")
        payload = {
            "input_type": context.direction,
            "texts": texts,
            "model": context.model,
            "structured_messages": list(context.messages),
            "request_data": {"request_id": context.request_id, "consumer": context.consumer, "route": context.route},
            "litellm_call_id": context.request_id,
        }
        try:
            async with self._http().post(self._url, data=orjson.dumps(payload), headers=self._headers) as response:
                raw = await response.read()
                if response.status != 200:
                    return Result(error=str(response.status))
        except aiohttp.ClientConnectorError:
            return Result(error="connect-error")
        except aiohttp.ClientError:
            return Result(error="reset")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Result(error="invalid-response")
        if not isinstance(answer, dict):
            return Result(error="invalid-response")
        action = answer.get("action")
        reason = answer.get("blocked_reason") if isinstance(answer.get("blocked_reason"), str) else None
        if action == "BLOCKED":
            return Result(categories=("blocked",), detail=reason)
        if action == "GUARDRAIL_INTERVENED":
            new = answer.get("texts")
            if not isinstance(new, list) or len(new) != len(texts) or not all(isinstance(t, str) for t in new):
                return Result(error="invalid-response")
            if new == texts:
                return Result()
            if self.config.action == "audit":
                return Result(categories=("intervened",), detail=reason)
            return Result(categories=("intervened",), texts=list(new), detail=reason)
        if action in ("NONE", None):
            return Result()
        return Result(error="invalid-response")
