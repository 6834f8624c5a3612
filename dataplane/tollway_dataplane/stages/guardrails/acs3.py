"""Alibaba Cloud's V3 request signature (ACS3-HMAC-SHA256), for the Content Moderation checker.

    canonical request = METHOD \\n path \\n sorted query \\n canonical headers \\n signed header names \\n sha256(body)
    string to sign    = "ACS3-HMAC-SHA256" \\n sha256hex(canonical request)
    Authorization     = ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<names>,Signature=hex(HMAC-SHA256)

The canonical headers are `host`, `content-type` and every `x-acs-*` header, lower-cased, sorted, one
`name:value\\n` each; query names and values are RFC 3986 percent-encoded (space as %20, `~` kept). Kept apart
from the checker so the signing can be read and tested on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"


def percent(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{percent(k)}={percent(v)}" for k, v in sorted(query.items()))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers that are signed, lower-cased and sorted."""
    return sorted(
        (k.lower(), v.strip())
        for k, v in headers.items()
        if k.lower() in ("host", "content-type") or k.lower().startswith("x-acs-")
    )


def canonical_request(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> str:
    pairs = signed(headers)
    return "\n".join(
        (
            method.upper(),
            path or "/",
            canonical_query(query),
            "".join(f"{k}:{v}\n" for k, v in pairs),
            ";".join(k for k, _ in pairs),
            sha256_hex(body),
        )
    )


def signature(secret: str, canonical: str) -> str:
    to_sign = f"{ALGORITHM}\n{sha256_hex(canonical.encode())}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    body: bytes,
    content_type: str,
    action: str,
    version: str,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers of a signed request (Authorization included)."""
    headers = {
        "host": host,
        "content-type": content_type,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": sha256_hex(body),
    }
    if security_token:
        headers["x-acs-security-token"] = security_token
    canonical = canonical_request(method, path, query, headers, body)
    names = ";".join(k for k, _ in signed(headers))
    headers["Authorization"] = (
        f"{ALGORITHM} Credential={access_key_id},SignedHeaders={names},"
        f"Signature={signature(access_key_secret, canonical)}"
    )
    return headers
