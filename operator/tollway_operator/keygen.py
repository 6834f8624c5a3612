"""Consumer credentials with `generate: true`: the operator creates the missing Secret with a strong random key.

The Secret is owned by the Consumer (an ownerReference with the Consumer's uid, controller=true), so Kubernetes'
garbage collector deletes it with the Consumer. The key value is never logged.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from tollway_kube.client import KubeClient, KubeError, object_path

from .resources.common import API_VERSION
from .resources.consumer import CredentialRequest

KEY_PREFIX = "sk-tollway-"
GENERATED_LABEL = "tollway.dev/generated-for"  # the Consumer's name


def new_api_key() -> str:
    """`sk-tollway-` and 48 URL-safe characters (288 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(36)


def generated_secret(request: CredentialRequest, consumer_uid: str, key: str | None = None) -> dict[str, Any]:
    value = key if key is not None else new_api_key()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": request.secret_name,
            "namespace": request.namespace,
            "labels": {"app.kubernetes.io/managed-by": "tollway-operator", GENERATED_LABEL: request.consumer},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Consumer",
                    "name": request.consumer,
                    "uid": consumer_uid,
                    "controller": True,
                }
            ],
        },
        "data": {request.key: base64.b64encode(value.encode()).decode("ascii")},
    }


async def create_generated_secret(client: KubeClient, request: CredentialRequest, consumer_uid: str) -> bool:
    """True when created; False when a Secret of that name appeared meanwhile (it is then left alone)."""
    try:
        await client.request(
            "POST", object_path("Secret", request.namespace), body=generated_secret(request, consumer_uid)
        )
    except KubeError as exc:
        if exc.status == 409:
            return False
        raise
    return True
