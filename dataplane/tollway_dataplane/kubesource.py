"""Kubernetes as a config source: the operator's rendered ConfigMap and Secret, watched through the API.

`KubeSource` is a `ConfigSource` that lists, then watches, the main ConfigMap and Secret by name (a
`metadata.name` field selector, so RBAC can grant it by `resourceNames`), fetches shards when a manifest names
them (the format is the contract's `rendered` module), and offers a config only when the config and the keys
carry the same hash. Watches resume from the last resourceVersion, relist on 410 Gone and reconnect with backoff.
The watch runs on its own thread and event loop: no Kubernetes work happens on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from tollway_contract.load import ConfigError, config_from_dict, secrets_from_dict
from tollway_contract.rendered import (
    HASH_ANNOTATION,
    MANIFEST_KEY,
    SHARD_KEY,
    FormatError,
    Manifest,
    decode_document,
    default_secret_name,
    object_blobs,
)
from tollway_kube.client import KubeClient, KubeCredentials, KubeError, object_path

if TYPE_CHECKING:
    from .sources import Loaded

log = logging.getLogger("tollway.config.kube")


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
