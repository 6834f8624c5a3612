"""Write the compiled config (ConfigMap) and provider keys (Secret) into the target namespace.

Only when the content hash differs from what the cluster holds. Large documents are gzipped and, when even
that does not fit one object, sharded (the format lives with the data plane, in `tollway_dataplane.kubesource`).
Write order: every shard first, then the Secret, then the ConfigMap, so that a reader following the main
objects never finds a manifest naming shards that are not written yet; shards the new version no longer needs
are deleted last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from tollway_contract.dump import config_to_dict, secrets_to_dict
from tollway_contract.rendered import (
    CONFIG_DOCUMENT,
    HASH_ANNOTATION,
    MAX_OBJECT_BYTES,
    MAX_SHARDS,
    SECRETS_DOCUMENT,
    encode_document,
    rendered_objects,
    shard_name,
)
from tollway_kube.client import KubeClient, KubeError, object_path

from .compiler import CompileResult

log = logging.getLogger("tollway.operator.publish")

SHARDS_ANNOTATION = "tollway.dev/shards"  # on the main object: how many shards the current version uses
_METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


@dataclass(frozen=True)
class Published:
    hash: str
    written: bool
    config_bytes: int = 0  # the JSON document
    config_stored_bytes: int = 0  # as stored (gzipped when large)
    config_shards: int = 0
    secrets_shards: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Current:
    hash: str | None
    shards: int


class Publisher:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        configmap: str,
        secret: str,
        *,
        max_object_bytes: int = MAX_OBJECT_BYTES,
    ):
        self.client = client
        self.namespace = namespace
        self.configmap = configmap
        self.secret = secret
        self.max_object_bytes = max_object_bytes

    def describe(self) -> str:
        return f"configmap {self.namespace}/{self.configmap} + secret {self.secret}"

    async def _current(self, kind: str, name: str) -> _Current:
        meta = await self.client.get(object_path(kind, self.namespace, name), accept=_METADATA_ONLY)
        annotations = ((meta or {}).get("metadata") or {}).get("annotations") or {}
        try:
            shards = int(annotations.get(SHARDS_ANNOTATION) or 0)
        except ValueError:
            shards = MAX_SHARDS
        return _Current(annotations.get(HASH_ANNOTATION), shards)

    async def publish(self, result: CompileResult) -> Published:
        """Make the cluster hold `result`'s config and keys; a no-op when it already does."""
        started = time.perf_counter()
        digest = result.hash
        config_now, secret_now = await asyncio.gather(
            self._current("ConfigMap", self.configmap), self._current("Secret", self.secret)
        )
        if config_now.hash == digest and secret_now.hash == digest:
            return Published(digest, written=False)

        config_objects, secret_objects, config_size, config_stored = await asyncio.to_thread(self._render, result)
        config_main, secret_main = config_objects[-1], secret_objects[-1]
        config_shards, secret_shards = config_objects[:-1], secret_objects[:-1]
        config_main["metadata"]["annotations"][SHARDS_ANNOTATION] = str(len(config_shards))
        secret_main["metadata"]["annotations"][SHARDS_ANNOTATION] = str(len(secret_shards))

        await asyncio.gather(*(self._put(obj) for obj in (*secret_shards, *config_shards)))
        await self._put(secret_main)
        await self._put(config_main)
        await self._delete_unused("Secret", self.secret, len(secret_shards), secret_now.shards)
        await self._delete_unused("ConfigMap", self.configmap, len(config_shards), config_now.shards)
        return Published(
            digest,
            written=True,
            config_bytes=config_size,
            config_stored_bytes=config_stored,
            config_shards=len(config_shards),
            secrets_shards=len(secret_shards),
            seconds=time.perf_counter() - started,
        )

    def _render(self, result: CompileResult) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, int]:
        config_json = orjson.dumps(config_to_dict(result.config))
        secrets_json = orjson.dumps(secrets_to_dict(result.secrets))
        config = encode_document(
            CONFIG_DOCUMENT, config_json, result.hash, self.configmap, max_object_bytes=self.max_object_bytes
        )
        secrets = encode_document(
            SECRETS_DOCUMENT, secrets_json, result.hash, self.secret, max_object_bytes=self.max_object_bytes
        )
        return (
            rendered_objects("ConfigMap", self.configmap, self.namespace, config),
            rendered_objects("Secret", self.secret, self.namespace, secrets),
            len(config_json),
            config.manifest.size,
        )

    async def _put(self, obj: dict[str, Any]) -> None:
        """Create or replace (unconditionally: this operator is the objects' only writer)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        path = object_path(kind, self.namespace, name)
        for _ in range(3):
            try:
                await self.client.request("PUT", path, body=obj)
                return
            except KubeError as exc:
                if exc.status != 404:
                    raise
            try:
                await self.client.request("POST", object_path(kind, self.namespace), body=obj)
                return
            except KubeError as exc:
                if exc.status != 409:  # created meanwhile: replace it on the next round
                    raise
        raise KubeError(409, "Conflict", f"{kind} {self.namespace}/{name} keeps changing under the operator")

    async def _delete_unused(self, kind: str, name: str, keep: int, had: int) -> None:
        for index in range(keep + 1, max(had, keep) + 1):
            try:
                await self.client.request("DELETE", object_path(kind, self.namespace, shard_name(name, index)))
            except KubeError as exc:
                if exc.status != 404:
                    log.warning("cannot delete an unused shard", extra={"kind": kind, "error": str(exc)})
