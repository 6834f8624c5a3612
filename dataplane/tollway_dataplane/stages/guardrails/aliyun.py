"""The `aliyun-moderation` checker: Alibaba Cloud Content Moderation, `TextModerationPlus` (API 2022-03-02).

`POST {endpoint}/?Service=llm_query_moderation` for a prompt (`llm_response_moderation` for an answer), a form
body `ServiceParameters={"content": ..., "sessionId": ...}`, signed with the V3 scheme (acs3.py) from an
AccessKey whose values come from the secrets document. The service reads at most 2,000 characters per call, so
longer texts go in pieces, concurrently. The answer: `Code` (200), `Data.RiskLevel` (none, low, medium, high),
`Data.Result[].Label` (the risk types) and `Data.Advice[].Answer` (a reply the service suggests, which may become
the message the caller reads). A text counts when its RiskLevel reaches the configured level (high by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from tollway_contract.model import AliyunSettings, Checker

from ..poolclient import IDENTITY
from . import acs3
from .verdict import CheckContext, Result

ACTION = "TextModerationPlus"
VERSION = "2022-03-02"
SERVICES = {"request": "llm_query_moderation", "response": "llm_response_moderation"}
_PIECE = 1800  # below the service's 2,000-character limit per call
_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}
_FORM = "application/x-www-form-urlencoded"


class AliyunChecker:
    remote = True

    def __init__(self, checker: Checker, secrets: Mapping[str, str], http: Callable[[], aiohttp.ClientSession]):
        settings = checker.settings
        assert isinstance(settings, AliyunSettings)
        self.config = checker
        self.name = checker.name
        self._settings = settings
        self._http = http
        self._url = settings.endpoint or f"https://green-cip.{settings.region}.aliyuncs.com"
        self._host = urlsplit(self._url).netloc
        self._threshold = _LEVELS[settings.risk_level]
        self._key_id = secrets.get(settings.access_key_id)
        self._key_secret = secrets.get(settings.access_key_secret)
        self._token = secrets.get(settings.security_token) if settings.security_token else None

    def __repr__(self) -> str:  # never show the AccessKey
        return f"AliyunChecker(name={self.name!r}, url={self._url!r})"

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        text = "\n".join(t for t in texts if t)
        if not text:
            return Result()
        if not self._key_id or not self._key_secret:
            return Result(error="missing-credentials")
        pieces = [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]
        answers = await asyncio.gather(*(self._moderate(p, context) for p in pieces))
        errors = [a for a in answers if isinstance(a, str)]
        if errors:
            return Result(error=errors[0])
        found: dict[str, None] = {}
        advice = None
        for data in answers:
            assert isinstance(data, dict)
            level = _LEVELS.get(str(data.get("RiskLevel", "none")).lower(), 0)
            if level < self._threshold:
                continue
            labels = [
                str(r["Label"])
                for r in data.get("Result") or ()
                if isinstance(r, dict) and r.get("Label") and r.get("Label") != "nonLabel"
            ]
            for label in labels or [f"risk-{str(data.get('RiskLevel')).lower()}"]:
                found.setdefault(label)
            advice = advice or _advice(data)
        if not found:
            return Result()
        return Result(categories=tuple(found), message=advice if self._settings.advice_as_message else None)

    async def _moderate(self, content: str, context: CheckContext) -> dict[str, Any] | str:
        """The answer's `Data`, or the reason it could not be had."""
        assert self._key_id is not None and self._key_secret is not None
        query = {"Service": SERVICES[context.direction]}
        parameters = orjson.dumps({"content": content, "sessionId": context.request_id}).decode()
        body = urlencode({"ServiceParameters": parameters}).encode()
        headers = acs3.sign(
            method="POST",
            host=self._host,
            path="/",
            query=query,
            body=body,
            content_type=_FORM,
            action=ACTION,
            version=VERSION,
            access_key_id=self._key_id,
            access_key_secret=self._key_secret,
            security_token=self._token,
        )
        url = f"{self._url}/?{acs3.canonical_query(query)}"
        try:
            headers["Accept-Encoding"] = IDENTITY  # not signed: only host, content-type and x-acs-* are
            async with self._http().post(url, data=body, headers=headers) as response:
                raw = await response.read()
                if response.status != 200:
                    return str(response.status)
        except aiohttp.ClientConnectorError:
            return "connect-error"
        except aiohttp.ClientError:
            return "reset"
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "invalid-response"
        if not isinstance(answer, dict) or answer.get("Code") != 200 or not isinstance(answer.get("Data"), dict):
            code = answer.get("Code") if isinstance(answer, dict) else None
            return f"code-{code}" if code is not None else "invalid-response"
        return dict(answer["Data"])


def _advice(data: dict[str, Any]) -> str | None:
    for advice in data.get("Advice") or ():
        if isinstance(advice, dict) and isinstance(advice.get("Answer"), str) and advice["Answer"]:
            return str(advice["Answer"])
    return None
