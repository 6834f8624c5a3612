"""The rendered-object format: how a config document travels in Kubernetes ConfigMaps and Secrets.

Shared by the operator (which writes it) and the data plane (which reads it), so it lives in the contract.
A config document (and its provider-keys document) travels in one main object (ConfigMap NAME, Secret NAME)
whose `manifest.json` names the hash, the encoding and where the payload is: inline (`config.json`, or
`config.json.gz` once it is large) or split across shard objects `NAME-1`, `NAME-2`, ... when even the compressed
payload would not fit in one object (the API server stores at most 1 MiB per object). Shards carry the hash in an
annotation and are written before the main object, so a reader that follows the main object never assembles a
payload from pieces of two versions.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

FORMAT_VERSION = 1
MANIFEST_KEY = "manifest.json"
SHARD_KEY = "shard"
CONFIG_DOCUMENT = "config.json"
SECRETS_DOCUMENT = "secrets.json"
HASH_ANNOTATION = "tollway.dev/config-hash"
SHARD_ANNOTATION = "tollway.dev/shard"  # "i/n"
RENDERED_LABEL = "tollway.dev/rendered"  # "true" on every object the operator renders (main and shards)
MANAGED_BY = {"app.kubernetes.io/managed-by": "tollway-operator", RENDERED_LABEL: "true"}

# The API server refuses ConfigMaps and Secrets over 1 MiB of data; keep room for keys, manifest and metadata.
MAX_OBJECT_BYTES = 900 * 1024
# Documents up to this size stay plain JSON (readable with kubectl); larger ones are gzipped.
PLAIN_LIMIT_BYTES = 256 * 1024
# Shards are NAME-1 .. NAME-MAX_SHARDS; RBAC lists exactly these names, so the number is bounded.
MAX_SHARDS = 8

DEFAULT_CONFIGMAP = "tollway-config"


def default_secret_name(configmap: str) -> str:
    """The provider-keys Secret that goes with a config ConfigMap: tollway-config -> tollway-provider-keys."""
    return f"{configmap.removesuffix('-config')}-provider-keys"


def shard_name(name: str, index: int) -> str:
    """Shards are numbered from 1: NAME-1, NAME-2, ..."""
    return f"{name}-{index}"


class FormatError(ValueError):
    """A rendered object is not in the expected format, or its pieces do not belong together (yet)."""


@dataclass(frozen=True)
class Manifest:
    hash: str
    document: str  # "config.json" | "secrets.json"
    encoding: str  # "identity" | "gzip"
    sha256: str  # of the encoded payload (as stored, before decompression)
    size: int  # bytes of the encoded payload
    shards: tuple[str, ...] = ()  # object names holding the payload in order; empty: inline

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT_VERSION,
            "hash": self.hash,
            "document": self.document,
            "encoding": self.encoding,
            "sha256": self.sha256,
            "size": self.size,
            "shards": list(self.shards),
        }
        return orjson.dumps(body, option=orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = orjson.loads(raw)
            if data.get("format") != FORMAT_VERSION:
                raise FormatError(f"manifest format {data.get('format')!r} is not supported (expected 1)")
            manifest = cls(
                hash=str(data["hash"]),
                document=str(data["document"]),
                encoding=str(data["encoding"]),
                sha256=str(data["sha256"]),
                size=int(data["size"]),
                shards=tuple(str(s) for s in data.get("shards") or ()),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(f"unreadable manifest: {exc}") from None
        if manifest.encoding not in ("identity", "gzip"):
            raise FormatError(f"unknown encoding {manifest.encoding!r}")
        return manifest

    @property
    def inline_key(self) -> str:
        return self.document + (".gz" if self.encoding == "gzip" else "")


@dataclass(frozen=True)
class Rendered:
    """One document as the blobs of the objects that carry it: the main object first, then shards 1..n."""

    manifest: Manifest
    main: dict[str, bytes]
    shards: tuple[bytes, ...] = ()


def encode_document(
    document: str,
    payload: bytes,
    digest: str,
    name: str,
    *,
    max_object_bytes: int = MAX_OBJECT_BYTES,
    plain_limit: int = PLAIN_LIMIT_BYTES,
    max_shards: int = MAX_SHARDS,
) -> Rendered:
    """Lay out `payload` (a JSON document) for objects named `name`, `name-1`, ...: plain, gzip, or sharded."""
    encoding, encoded = "identity", payload
    if len(payload) > min(plain_limit, max_object_bytes):
        encoding, encoded = "gzip", gzip.compress(payload, compresslevel=6, mtime=0)
    sha = hashlib.sha256(encoded).hexdigest()
    if len(encoded) <= max_object_bytes:
        manifest = Manifest(digest, document, encoding, sha, len(encoded))
        return Rendered(manifest, {MANIFEST_KEY: manifest.to_json(), manifest.inline_key: encoded})
    pieces = tuple(encoded[i : i + max_object_bytes] for i in range(0, len(encoded), max_object_bytes))
    if len(pieces) > max_shards:
        raise FormatError(
            f"{document} needs {len(pieces)} objects of {max_object_bytes} bytes after compression "
            f"({len(encoded)} bytes); at most {max_shards} shards are supported"
        )
    names = tuple(shard_name(name, i) for i in range(1, len(pieces) + 1))
    manifest = Manifest(digest, document, encoding, sha, len(encoded), names)
    return Rendered(manifest, {MANIFEST_KEY: manifest.to_json()}, pieces)


def decode_document(manifest: Manifest, main: Mapping[str, bytes], shards: list[bytes] | None = None) -> bytes:
    """The JSON document a manifest describes, from the main object's blobs and (when sharded) the shard payloads.

    Raises FormatError when a piece is missing or the pieces do not add up to the manifest's checksum, which is
    what a reader sees between the operator writing shards and writing the main object: wait for the next event.
    """
    if manifest.shards:
        if shards is None or len(shards) != len(manifest.shards):
            raise FormatError(f"expected {len(manifest.shards)} shards")
        encoded = b"".join(shards)
    else:
        if manifest.inline_key not in main:
            raise FormatError(f"missing key {manifest.inline_key!r}")
        encoded = main[manifest.inline_key]
    if len(encoded) != manifest.size or hashlib.sha256(encoded).hexdigest() != manifest.sha256:
        raise FormatError(f"payload does not match the manifest of {manifest.hash} (a newer version is being written?)")
    if manifest.encoding == "gzip":
        try:
            return gzip.decompress(encoded)
        except (OSError, EOFError) as exc:
            raise FormatError(f"cannot decompress: {exc}") from None
    return encoded


def object_blobs(obj: Mapping[str, Any]) -> dict[str, bytes]:
    """The data of a ConfigMap (data + binaryData) or Secret (data, base64) as bytes by key."""
    blobs: dict[str, bytes] = {}
    try:
        if obj.get("kind") == "Secret":
            for key, value in (obj.get("data") or {}).items():
                blobs[key] = base64.b64decode(value, validate=True)
        else:
            for key, value in (obj.get("data") or {}).items():
                blobs[key] = str(value).encode("utf-8")
            for key, value in (obj.get("binaryData") or {}).items():
                blobs[key] = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"bad base64 data: {exc}") from None
    return blobs


def build_object(
    kind: str, name: str, namespace: str, blobs: Mapping[str, bytes], annotations: Mapping[str, str]
) -> dict[str, Any]:
    """A ConfigMap or Secret body holding `blobs`: ConfigMaps keep UTF-8 JSON readable in `data`."""
    metadata = {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY), "annotations": dict(annotations)}
    encode = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731 - tiny local helper
    if kind == "Secret":
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": metadata,
            "data": {k: encode(v) for k, v in sorted(blobs.items())},
        }
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key, raw in sorted(blobs.items()):
        if key.endswith(".json"):
            data[key] = raw.decode("utf-8")
        else:
            binary[key] = encode(raw)
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    if binary:
        body["binaryData"] = binary
    return body


def rendered_objects(kind: str, name: str, namespace: str, rendered: Rendered) -> list[dict[str, Any]]:
    """The objects to write, in write order: shards first, then the main object."""
    digest = rendered.manifest.hash
    count = len(rendered.shards)
    objects = [
        build_object(
            kind,
            shard_name(name, i),
            namespace,
            {SHARD_KEY: piece},
            {HASH_ANNOTATION: digest, SHARD_ANNOTATION: f"{i}/{count}"},
        )
        for i, piece in enumerate(rendered.shards, start=1)
    ]
    objects.append(build_object(kind, name, namespace, rendered.main, {HASH_ANNOTATION: digest}))
    return objects
