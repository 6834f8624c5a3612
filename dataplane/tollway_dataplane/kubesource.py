"""Kubernetes as a config source: the operator's rendered ConfigMap and Secret, watched through the API.

Three parts, because the data plane owns the contract and the operator imports it:

* The rendered-object format. A config document (and its provider-keys document) travels in one main object
  (ConfigMap NAME, Secret NAME) whose `manifest.json` names the hash, the encoding and where the payload is:
  inline (`config.json`, or `config.json.gz` once it is large) or split across shard objects `NAME-1`, `NAME-2`,
  ... when even the compressed payload would not fit in one object (the API server stores at most 1 MiB per
  object). Shards carry the hash in an annotation and are written before the main object, so a reader that
  follows the main object never assembles a payload from pieces of two versions.
* `KubeClient`: a small asyncio client for the API (aiohttp), with credentials from a kubeconfig, the in-cluster
  service account, or KUBECONFIG / ~/.kube/config, in that order.
* `KubeSource`: a `ConfigSource` that lists, then watches, the main ConfigMap and Secret by name (a
  `metadata.name` field selector, so RBAC can grant it by `resourceNames`), fetches shards when a manifest names
  them, and offers a config only when the config and the keys carry the same hash. Watches resume from the last
  resourceVersion, relist on 410 Gone and reconnect with backoff. The watch runs on its own thread and event
  loop: no Kubernetes work happens on the request path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import gzip
import hashlib
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson

from .config.load import ConfigError, config_from_dict, secrets_from_dict

if TYPE_CHECKING:
    from .sources import Loaded

log = logging.getLogger("tollway.config.kube")

# --------------------------------------------------------------------------------------------------------------
# The rendered-object format
# --------------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------------
# The API client
# --------------------------------------------------------------------------------------------------------------


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")


@dataclass
class KubeCredentials:
    """Where the API server is and how to authenticate, as the official client's config loaders find it."""

    server: str
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False
    description: str = ""
    _configuration: Any = dataclasses.field(default=None, repr=False)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> KubeCredentials:
        """An explicit kubeconfig; else the in-cluster service account; else KUBECONFIG or ~/.kube/config."""
        import kubernetes.client
        import kubernetes.config

        configuration = kubernetes.client.Configuration()
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            description = f"kubeconfig {kubeconfig}"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            description = "in-cluster service account"
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration)
            description = f"kubeconfig {os.environ.get('KUBECONFIG') or '~/.kube/config'}"
        return cls(
            server=configuration.host.rstrip("/"),
            ca_path=configuration.ssl_ca_cert,
            cert_path=configuration.cert_file,
            key_path=configuration.key_file,
            insecure=not configuration.verify_ssl,
            description=description,
            _configuration=configuration,
        )

    def authorization(self) -> str | None:
        """The Authorization header value; re-read on every call, so rotated service-account tokens are used."""
        if self._configuration is None:
            return None
        configuration = self._configuration
        value = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
            "authorization"
        )
        if value and " " not in value:
            value = f"Bearer {value}"
        return value or None

    def token(self) -> str | None:
        value = self.authorization()
        return value.split(" ", 1)[1] if value else None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_path) if self.ca_path else ssl.create_default_context()
        if self.cert_path and self.key_path:
            context.load_cert_chain(self.cert_path, self.key_path)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class KubeClient:
    """The few API calls Tollway makes, over one aiohttp session. Errors come back as KubeError."""

    def __init__(self, credentials: KubeCredentials, *, request_timeout: float = 30.0, connections: int = 64):
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=10)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=self._connections)
            self._session = aiohttp.ClientSession(
                self.credentials.server, connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None, accept: str | None = None) -> dict[str, str]:
        headers = {"Accept": accept or "application/json", "User-Agent": "tollway"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = self._headers(content_type if data is not None else None, accept)
        async with self.session.request(
            method, path, params=params, data=data, headers=headers, timeout=self._timeout
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                raise _error(response.status, raw)
            return orjson.loads(raw) if raw else {}

    async def get(self, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, **kwargs)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events, one dict each, until the server ends the stream."""
        query = {**params, "watch": "1"}
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=read_timeout)
        async with self.session.get(path, params=query, headers=self._headers(), timeout=timeout) as response:
            if response.status >= 400:
                raise _error(response.status, await response.read())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield orjson.loads(line)


def _error(status: int, raw: bytes) -> KubeError:
    try:
        body = orjson.loads(raw)
        return KubeError(status, str(body.get("reason") or ""), str(body.get("message") or raw[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        return KubeError(status, "", raw[:200].decode("utf-8", "replace"))


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
    base = f"/api/v1/namespaces/{quote(namespace)}/{plural}"
    return f"{base}/{quote(name)}" if name else base


# --------------------------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Payload:
    hash: str
    body: bytes
    resource_version: str


class KubeSource:
    """The rendered ConfigMap + Secret of a namespace, followed by watch. A `ConfigSource` that notifies."""

    WATCH_SECONDS = 290  # server-side timeout of one watch request; the client reads with a margin on top

    def __init__(
        self,
        namespace: str,
        configmap: str,
        secret: str | None = None,
        *,
        kubeconfig: str | None = None,
        credentials: KubeCredentials | None = None,
        initial_wait: float = 10.0,
    ):
        self.namespace = namespace
        self.configmap = configmap
        self.secret = secret or default_secret_name(configmap)
        # Loaded now, so that a missing or broken kubeconfig fails `tollway run` at once with a clear message.
        self._credentials = credentials or KubeCredentials.load(kubeconfig)
        self._initial_wait = initial_wait
        self._lock = threading.Lock()
        self._payloads: dict[str, _Payload] = {}  # "ConfigMap" / "Secret" -> the latest assembled document
        self._pair: tuple[str, bytes, bytes] | None = None  # hash, config, secrets: the latest consistent pair
        self._listeners: list[Callable[[], None]] = []
        self._synced = {"ConfigMap": threading.Event(), "Secret": threading.Event()}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._latest_main: dict[str, dict[str, Any] | None] = {}
        self._retry_handles: dict[str, asyncio.TimerHandle] = {}
        self._waited = False

    # -- ConfigSource -------------------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"kubernetes configmap {self.namespace}/{self.configmap} + secret {self.secret}"

    def subscribe(self, notify: Callable[[], None]) -> None:
        self._listeners.append(notify)

    def fingerprint(self) -> object:
        """The hash of the newest config whose keys have arrived too (None until there is one)."""
        self.start()
        if not self._waited:  # the first call (the server's initial load) waits for the first listing
            deadline = time.monotonic() + self._initial_wait
            for event in self._synced.values():
                event.wait(max(0.0, deadline - time.monotonic()))
            self._waited = True
        with self._lock:
            return self._pair[0] if self._pair else None

    def load(self) -> Loaded:
        with self._lock:
            pair = self._pair
        if pair is None:
            raise ConfigError([f"{self.describe()}: no rendered config yet"])
        digest, config_raw, secrets_raw = pair
        try:
            config = config_from_dict(orjson.loads(config_raw))
            secrets = secrets_from_dict(orjson.loads(secrets_raw))
        except orjson.JSONDecodeError as exc:
            raise ConfigError([f"{self.describe()}: not JSON: {exc}"]) from None
        if config.hash != digest or secrets.hash != digest:
            raise ConfigError([f"{self.describe()}: documents carry {config.hash}/{secrets.hash}, manifest {digest}"])
        from .sources import Loaded

        return Loaded(config, secrets)

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._thread_main, name="tollway-kube-watch", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stopping = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        if self._thread is not None:
            self._thread.join(5)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._watch_all())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the kubernetes watch stopped; the last config keeps serving")
        finally:
            loop.close()

    async def _watch_all(self) -> None:
        credentials = self._credentials
        client = KubeClient(credentials, connections=8)
        log.info("watching the rendered config", extra={"source": self.describe(), "api": credentials.server})
        try:
            await asyncio.gather(
                self._follow(client, "ConfigMap", self.configmap),
                self._follow(client, "Secret", self.secret),
            )
        finally:
            await client.close()

    # -- watching -----------------------------------------------------------------------------------------------
    async def _follow(self, client: KubeClient, kind: str, name: str) -> None:
        """List then watch one object by name, forever: resume from resourceVersion, relist on 410 Gone."""
        path = object_path(kind, self.namespace)
        selector = {"fieldSelector": f"metadata.name={name}"}
        resource_version: str | None = None
        backoff = 0.1
        while not self._stopping:
            try:
                if resource_version is None:
                    listing = await client.request("GET", path, params=selector)
                    items = listing.get("items") or []
                    resource_version = listing["metadata"]["resourceVersion"]
                    await self._observe(client, kind, {**items[0], "kind": kind} if items else None)
                    self._synced[kind].set()
                params = {
                    **selector,
                    "resourceVersion": resource_version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(self.WATCH_SECONDS),
                }
                async for event in client.watch(path, params, read_timeout=self.WATCH_SECONDS + 30):
                    kind_of_event = event.get("type")
                    obj = event.get("object") or {}
                    if kind_of_event == "ERROR":
                        if obj.get("code") == 410:
                            log.info("watch expired (410 Gone); relisting", extra={"kind": kind, "object": name})
                            resource_version = None
                            break
                        raise KubeError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion") or resource_version
                    if kind_of_event in ("ADDED", "MODIFIED"):
                        await self._observe(client, kind, {**obj, "kind": kind})
                    elif kind_of_event == "DELETED":
                        await self._observe(client, kind, None)
                    backoff = 0.1
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:
                    resource_version = None
                    continue
                log.warning(
                    "kubernetes API error; retrying",
                    extra={"kind": kind, "object": name, "error": str(exc), "retry_in": round(backoff, 2)},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
                log.warning(
                    "kubernetes watch interrupted; reconnecting",
                    extra={"kind": kind, "object": name, "error": repr(exc), "retry_in": round(backoff, 2)},
                )
                await asyncio.sleep(backoff * (1 + random.random() / 2))
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug must not end the watch for the life of the process: start over
                log.exception("kubernetes watch failed; relisting", extra={"kind": kind, "object": name})
                resource_version = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _observe(self, client: KubeClient, kind: str, obj: dict[str, Any] | None) -> None:
        self._latest_main[kind] = obj
        if obj is None:
            log.warning("rendered object is gone; the last config keeps serving", extra={"kind": kind})
            return
        await self._assemble(client, kind, obj, attempt=0)

    async def _assemble(self, client: KubeClient, kind: str, obj: dict[str, Any], attempt: int) -> None:
        if self._latest_main.get(kind) is not obj:
            return  # a newer version arrived meanwhile
        metadata = obj.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        current = self._payloads.get(kind)
        if current is not None and current.resource_version == version:
            return
        try:
            blobs = object_blobs(obj)
            if MANIFEST_KEY not in blobs:
                raise FormatError(f"no {MANIFEST_KEY}")
            manifest = Manifest.from_json(blobs[MANIFEST_KEY])
            if current is not None and current.hash == manifest.hash:
                self._payloads[kind] = dataclasses.replace(current, resource_version=version)
                return
            pieces = await self._fetch_shards(client, kind, manifest) if manifest.shards else None
            body = await asyncio.to_thread(decode_document, manifest, blobs, pieces)
        except (FormatError, KubeError) as exc:
            delay = min(0.2 * 2**attempt, 5.0)
            log.warning(
                "rendered object not readable yet; retrying",
                extra={"kind": kind, "object": metadata.get("name"), "problem": str(exc), "retry_in": delay},
            )
            loop = asyncio.get_running_loop()
            previous = self._retry_handles.pop(kind, None)
            if previous is not None:
                previous.cancel()
            self._retry_handles[kind] = loop.call_later(
                delay, lambda: loop.create_task(self._assemble(client, kind, obj, attempt + 1))
            )
            return
        self._payloads[kind] = _Payload(manifest.hash, body, version)
        self._publish()

    async def _fetch_shards(self, client: KubeClient, kind: str, manifest: Manifest) -> list[bytes]:
        pieces = []
        for name in manifest.shards:
            shard = await client.get(object_path(kind, self.namespace, name))
            if shard is None:
                raise FormatError(f"shard {name} not found")
            annotations = (shard.get("metadata") or {}).get("annotations") or {}
            if annotations.get(HASH_ANNOTATION) != manifest.hash:
                raise FormatError(f"shard {name} holds {annotations.get(HASH_ANNOTATION)}, not {manifest.hash}")
            blobs = object_blobs({**shard, "kind": kind})
            if SHARD_KEY not in blobs:
                raise FormatError(f"shard {name} has no {SHARD_KEY!r} key")
            pieces.append(blobs[SHARD_KEY])
        return pieces

    def _publish(self) -> None:
        config, secrets = self._payloads.get("ConfigMap"), self._payloads.get("Secret")
        if config is None or secrets is None:
            return
        if config.hash != secrets.hash:
            log.info(
                "waiting for config and keys to carry the same hash",
                extra={"config": config.hash, "keys": secrets.hash},
            )
            return
        with self._lock:
            if self._pair is not None and self._pair[0] == config.hash:
                return
            self._pair = (config.hash, config.body, secrets.body)
        for notify in list(self._listeners):
            try:
                notify()
            except Exception:  # a listener's trouble must not stop the watch
                log.exception("config listener failed")
