"""Checker servers owned by the guardrail tests: a moderation API, a guard model answering in each supported
format, an Alibaba Cloud endpoint that verifies the V3 signature, and a webhook speaking LiteLLM's generic
guardrail API. Each decides from marker words in the text, records what it was sent, and can be told to be slow.

The Aliyun server recomputes the signature from the request as received (its own canonicalisation, written
from the published scheme, not the gateway's code), and answers 400 SignatureDoesNotMatch when it differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from aiohttp import web

ALIYUN_KEY_ID = "LTAI5tTestAccessKeyId"
ALIYUN_KEY_SECRET = "aliyun-secret-never-logged"
WEBHOOK_TOKEN = "webhook-token-never-logged"
MODERATION_KEY = "moderation-key-never-logged"


@dataclass
class Recorder:
    requests: list[dict[str, Any]] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering, for timeout tests
    released: asyncio.Event = field(default_factory=asyncio.Event)  # set: stop waiting (at teardown)

    async def pause(self) -> None:
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), self.delay)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


# -- OpenAI moderation -----------------------------------------------------------------------------------------


def moderation_app(recorder: Recorder) -> web.Application:
    async def moderations(request: web.Request) -> web.Response:
        body = await request.json()
        recorder.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        await recorder.pause()
        if request.headers.get("Authorization") != f"Bearer {MODERATION_KEY}":
            return _json({"error": {"message": "bad key", "type": "invalid_request_error"}}, 401)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        results = []
        for text in inputs:
            violence = 0.93 if "KILL" in text else 0.01
            harassment = 0.4 if "RUDE" in text else 0.0
            results.append(
                {
                    "flagged": violence > 0.5,
                    "categories": {"violence": violence > 0.5, "harassment": False},
                    "category_scores": {"violence": violence, "harassment": harassment},
                }
            )
        return _json({"id": "modr-1", "model": body.get("model"), "results": results})

    app = web.Application()
    app.router.add_post("/v1/moderations", moderations)
    return app


# -- a guard model in four formats -----------------------------------------------------------------------------


def judge_answer(model: str, text: str) -> str:
    """What each guard model says about `text`: BOMB is unsafe, DEBATE is Qwen3Guard's Controversial."""
    unsafe = "BOMB" in text
    if "llama-guard" in model:
        return "unsafe\nS1,S9" if unsafe else "safe"
    if "qwen3guard" in model:
        if unsafe:
            return "Safety: Unsafe\nCategories: Violent"
        if "DEBATE" in text:
            return "Safety: Controversial\nCategories: Politically Sensitive Topics"
        return "Safety: Safe\nCategories: None"
    if "granite" in model:
        return f"<think>Looking at it.</think>\n<score> {'yes' if unsafe else 'no'} </score>"
    if "shieldgemma" in model:
        return "Yes" if unsafe else "No"
    return "I cannot judge that."  # an unparseable answer


def judge_app(recorder: Recorder) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        recorder.requests.append({"body": body})
        await recorder.pause()
        messages = body["messages"]
        judged = messages[-1]["content"]
        answer = judge_answer(body["model"], judged)
        return _json(
            {
                "id": "chatcmpl-judge",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
            }
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


# -- Alibaba Cloud Content Moderation, with V3 signature verification -------------------------------------------


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def expected_signature(request: web.Request, body: bytes, secret: str, signed_names: list[str]) -> str:
    """The ACS3-HMAC-SHA256 signature of the request as received, recomputed from the published scheme."""
    query = "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(request.query.items()))
    headers = "".join(f"{name}:{request.headers.get(name, '').strip()}\n" for name in signed_names)
    canonical = "\n".join(
        [request.method, request.path, query, headers, ";".join(signed_names), hashlib.sha256(body).hexdigest()]
    )
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def aliyun_app(recorder: Recorder, secret: str = ALIYUN_KEY_SECRET) -> web.Application:
    async def moderate(request: web.Request) -> web.Response:
        body = await request.read()
        entry: dict[str, Any] = {"headers": dict(request.headers), "query": dict(request.query), "verified": False}
        recorder.requests.append(entry)
        await recorder.pause()
        authorization = request.headers.get("Authorization", "")
        algorithm, _, fields = authorization.partition(" ")
        parts = dict(p.split("=", 1) for p in fields.split(",") if "=" in p)
        names = parts.get("SignedHeaders", "").split(";")
        required = {
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        }
        problems = []
        if algorithm != "ACS3-HMAC-SHA256":
            problems.append("algorithm")
        if parts.get("Credential") != ALIYUN_KEY_ID:
            problems.append("credential")
        if not required <= set(names) or names != sorted(names):
            problems.append("signed headers")
        if request.headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            problems.append("content hash")
        if parts.get("Signature") != expected_signature(request, body, secret, names):
            problems.append("signature")
        if (
            request.headers.get("x-acs-action") != "TextModerationPlus"
            or request.headers.get("x-acs-version") != "2022-03-02"
        ):
            problems.append("action")
        if problems:
            entry["problems"] = problems
            return _json({"Code": "SignatureDoesNotMatch", "Message": ", ".join(problems), "RequestId": "r"}, 400)
        entry["verified"] = True
        form = parse_qs(body.decode())
        parameters = orjson.loads(form["ServiceParameters"][0])
        entry["service"] = request.query.get("Service")
        entry["content"] = parameters["content"]
        content = parameters["content"]
        if "BOMB" in content:
            data = {
                "RiskLevel": "high",
                "Result": [{"Label": "contraband_act", "Confidence": 97.1, "RiskWords": "BOMB"}],
                "Advice": [{"Answer": "作为AI助手，我无法回答这个问题。", "HitLabel": "contraband_act"}],  # noqa: RUF001
            }
        elif "MEDIUM" in content:
            data = {"RiskLevel": "medium", "Result": [{"Label": "political_n", "Confidence": 60.0}]}
        else:
            data = {"RiskLevel": "none", "Result": [{"Label": "nonLabel"}]}
        return _json({"Code": 200, "Message": "OK", "RequestId": "req-1", "Data": data})

    app = web.Application()
    app.router.add_post("/", moderate)
    return app


# -- the generic guardrail API ------------------------------------------------------------------------------------


def webhook_app(recorder: Recorder) -> web.Application:
    async def guard(request: web.Request) -> web.Response:
        body = await request.json()
        recorder.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        await recorder.pause()
        if request.headers.get("Authorization") != f"Bearer {WEBHOOK_TOKEN}":
            return _json({"detail": "unauthorized"}, 401)
        texts = body["texts"]
        if any("BLOCKME" in t for t in texts):
            return _json({"action": "BLOCKED", "blocked_reason": "marker found"})
        if any("Alice" in t for t in texts):
            return _json({"action": "GUARDRAIL_INTERVENED", "texts": [t.replace("Alice", "[PERSON]") for t in texts]})
        return _json({"action": "NONE"})

    app = web.Application()
    app.router.add_post("/guard", guard)
    return app
