"""The operator's core: changes in, one debounced render out.

kopf's event handlers (`handlers.py`) hand every watched object to the controller, which keeps the parts the
compiler reads and notes whether something that matters changed (spec, labels, Secret data; not status). The
controller waits for a quiet moment (`debounce`; at most `max_delay` under a steady stream, longer when renders
are expensive), compiles everything with the pure compiler, writes the ConfigMap and Secret when the hash
changed, creates requested consumer keys, and patches each object's status (in the background) when it says
something new. A burst of 500 applies becomes a handful of renders; a render that changes nothing writes nothing.

EndpointSlices are watched too (those labelled with a Service name), for pools whose `endpoints.service` names
that Service: their ready addresses are rendered into the pool, so a pod that turns ready or goes away reaches the
data plane with the same debounce as any change. A slice of a Service no pool names is kept but renders nothing:
it does not even wake the render loop (the set of named Services comes from the last compile, and a pool that
starts naming a Service is itself a change).

The first render waits until every object that existed at start-up has been seen (a metadata-only listing
names them), so a restarted operator never writes a config with half a namespace in it. (kopf's own index
pre-population would do this too, but it wakes every waiting object on each object indexed: quadratic, minutes
at 10,000 objects.)

About `status.configHash`: it names the first written config that carries the object as it is now (its spec,
and what it compiled to). A change to one object therefore patches that object's status, not the status of
every object in the namespace; a config carries an object as long as its observedGeneration and conditions
stand.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import orjson
from tollway_contract.rendered import RENDERED_LABEL, FormatError
from tollway_kube.client import KubeClient, KubeError

from .compiler import CompileResult, compile_crs
from .conditions import desired_status, failing_transitions, now_rfc3339, status_patch
from .keygen import create_generated_secret
from .options import OperatorOptions
from .publish import Published, Publisher
from .resources.common import API_VERSION, KINDS
from .resources.endpointslice import API_VERSION as SLICE_API_VERSION
from .resources.endpointslice import SERVICE_LABEL
from .status import ObjectRef

log = logging.getLogger("tollway.operator")

PLURALS = {
    "AIRoute": "airoutes",
    "Consumer": "consumers",
    "ProviderKeyPool": "providerkeypools",
    "TokenRateLimit": "tokenratelimits",
}
assert set(PLURALS) == set(KINDS)
IGNORED_SECRET_TYPES = ("helm.sh/release.v1", "kubernetes.io/service-account-token")
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
MAX_CHANGE_EVENTS = 50  # objects told about a failed write, at most, per render
RENDER_DUTY = 4.0  # under a steady stream of changes, wait at least this many times the last render's cost


def status_path(ref: ObjectRef) -> str:
    return f"/apis/{API_VERSION}/namespaces/{quote(ref.namespace)}/{PLURALS[ref.kind]}/{quote(ref.name)}/status"


def relevant_state(kind: str, body: Mapping[str, Any]) -> object:
    """What a change must touch to matter for the config: not status, not resourceVersion, not annotations."""
    meta = body.get("metadata") or {}
    if kind == "Secret":
        data = orjson.dumps([body.get("data"), body.get("stringData"), body.get("type")], option=orjson.OPT_SORT_KEYS)
        return (meta.get("uid"), hashlib.sha256(data).digest())
    if kind == "EndpointSlice":
        return (
            meta.get("uid"),
            hashlib.sha256(orjson.dumps(slice_document(body), option=orjson.OPT_SORT_KEYS)).digest(),
        )
    labels = tuple(sorted((meta.get("labels") or {}).items()))
    return (meta.get("uid"), meta.get("generation"), labels)


def piece_digests(result: CompileResult) -> dict[tuple[str, str], str]:
    """A digest per compiled object (what it contributes to the config, key values included for pools)."""
    values = dict(result.secrets.keys)
    out: dict[tuple[str, str], str] = {}

    def digest(*parts: str) -> str:
        h = hashlib.sha256()
        for part in parts:
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:24]

    for pool in result.config.pools:
        out[("ProviderKeyPool", pool.name)] = digest(repr(pool), *(values.get(k.id, "") for k in pool.keys))
    for route in result.config.routes:
        # Stage credentials (search engine keys) count like pool keys: a rotated Secret is a new config piece.
        secret_ids = sorted(
            {
                secret_id
                for rule in route.rules
                if rule.web_search
                for e in rule.web_search.engines
                for _, secret_id in e.credentials
            }
        )
        out[("AIRoute", route.name)] = digest(repr(route), *(values.get(i, "") for i in secret_ids))
    for consumer in result.config.consumers:
        out[("Consumer", consumer.name)] = digest(repr(consumer))
    for limit in result.config.rate_limits:
        out[("TokenRateLimit", limit.name)] = digest(repr(limit))
    return out


class Controller:
    def __init__(self, options: OperatorOptions, client: KubeClient):
        self.options = options
        self.client = client
        self.publisher = Publisher(
            client, options.target, options.configmap, options.secret_name, max_object_bytes=options.max_object_bytes
        )
        self._dirty = asyncio.Event()  # something changed since the last render
        self._changed = asyncio.Event()  # something changed since the debounce timer last restarted
        self._primed = asyncio.Event()  # every object that existed at start-up has been seen
        self._pending: set[str] | None = None  # uids still to be seen before the first render
        self._docs: dict[ObjectRef, dict[str, Any]] = {}  # what the compiler reads, per object
        self._seen: dict[ObjectRef, object] = {}
        self._uids: dict[ObjectRef, str] = {}
        self._status: dict[ObjectRef, dict[str, Any]] = {}
        self._pieces: dict[ObjectRef, str] = {}
        self._changed_refs: set[ObjectRef] = set()  # changed since the last successful write
        self._generated: set[tuple[str, str]] = set()  # (namespace, secret) created by this process
        self._services: set[tuple[str, str]] | None = None  # Services pools name, from the last compile
        self._events_context: contextvars.Context | None = None
        self._status_task: asyncio.Task[int] | None = None
        self._last_cost = 0.0  # seconds the last render took to compile and write
        self.published = False  # a first full render has been written or found current (readiness)

    # -- intake (from kopf's event handlers) --------------------------------------------------------------------
    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        if self._events_context is None:
            # kopf posts Events from its handlers' context; keep one to post from the render loop as well.
            self._events_context = contextvars.copy_context()
        meta = body.get("metadata") or {}
        ref = ObjectRef(kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        uid = str(meta.get("uid") or "")
        if event_type == "DELETED":
            self._docs.pop(ref, None)
            self._uids.pop(ref, None)
            self._status.pop(ref, None)
            self._pieces.pop(ref, None)
            if kind == "Secret":
                self._generated.discard((ref.namespace, ref.name))
            if self._seen.pop(ref, None) is not None and (
                kind != "EndpointSlice" or self._names_service(ref.namespace, body)
            ):
                self._mark(ref)
        else:
            self._uids[ref] = uid
            if kind not in ("Secret", "EndpointSlice"):
                self._status[ref] = dict(body.get("status") or {})
            state = relevant_state(kind, body)
            if self._seen.get(ref) != state:
                self._seen[ref] = state
                self._docs[ref] = document(kind, body)
                if kind != "EndpointSlice" or self._names_service(ref.namespace, body):
                    self._mark(ref)
        if self._pending is not None:
            self._pending.discard(uid)
            if not self._pending:
                self._primed.set()

    def _names_service(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Whether a pool named the slice's Service in the last compile (before the first compile: assume so)."""
        if self._services is None:
            return True
        service = ((body.get("metadata") or {}).get("labels") or {}).get(SERVICE_LABEL)
        return (namespace, str(service)) in self._services

    def _mark(self, ref: ObjectRef) -> None:
        self._changed_refs.add(ref)
        self._dirty.set()
        self._changed.set()

    def documents(self) -> list[dict[str, Any]]:
        return list(self._docs.values())

    # -- the loop -----------------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._wait_until_primed()
        self._dirty.set()
        resync = None
        if self.options.peering is None and self.options.resync > 0:
            resync = asyncio.create_task(self._resync(), name="tollway resync")
        failures = 0
        try:
            while True:
                await self._dirty.wait()
                waited = time.monotonic()
                trigger = await self._debounce()
                self._dirty.clear()
                try:
                    await self.render_once(trigger=trigger, waited=time.monotonic() - waited)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    delay = min(0.5 * 2 ** (failures - 1), 30.0)
                    expected = isinstance(exc, KubeError | aiohttp.ClientError | TimeoutError | OSError | FormatError)
                    log.error(
                        "render failed; retrying",
                        extra={"error": str(exc) or repr(exc), "retry_in": delay},
                        exc_info=not expected,
                    )
                    await asyncio.sleep(delay)
                    self._dirty.set()
        finally:
            for task in (resync, self._status_task):
                if task is not None:
                    task.cancel()

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync)
            self._dirty.set()

    async def _debounce(self) -> str:
        """Wait until nothing changed for `debounce` seconds, but no longer than `max_delay` in a steady stream;
        when renders are expensive (tens of thousands of objects), they take at most about a fifth of the time.
        Says which ended the wait ("quiet" or "deadline"), for the render's log line."""
        deadline = time.monotonic() + max(self.options.max_delay, RENDER_DUTY * self._last_cost)
        while True:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "deadline"
            try:
                await asyncio.wait_for(self._changed.wait(), min(self.options.debounce, remaining))
            except TimeoutError:
                return "quiet" if self.options.debounce < remaining else "deadline"

    async def _wait_until_primed(self) -> None:
        """Until every object that exists now has come through kopf (a restarted operator must not render a
        half-listed namespace). Objects created meanwhile arrive as events anyway."""
        while True:
            try:
                expected = await self._list_uids()
                break
            except (KubeError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("cannot list the watched objects yet; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
        self._pending = expected - set(self._uids.values())
        if not self._pending:
            self._primed.set()
        started = time.monotonic()
        while not self._primed.is_set():
            try:
                await asyncio.wait_for(self._primed.wait(), 10.0)
            except TimeoutError:
                # Deleted between the listing and the watch: never seen. Check what is still there.
                still = await self._list_uids()
                self._pending &= still
                log.info(
                    "waiting for the initial listing",
                    extra={"pending": len(self._pending), "seconds": round(time.monotonic() - started)},
                )
                if not self._pending:
                    self._primed.set()
        self._pending = None
        log.info(
            "initial listing complete",
            extra={"objects": len(self._docs), "seconds": round(time.monotonic() - started, 2)},
        )

    async def _list_uids(self) -> set[str]:
        """The uids of every watched object, listed as metadata only (page by page)."""
        scopes = [f"/namespaces/{quote(ns)}" for ns in self.options.namespaces] or [""]
        queries: list[tuple[str, dict[str, str]]] = []
        for scope in scopes:
            queries += [(f"/apis/{API_VERSION}{scope}/{plural}", {}) for plural in PLURALS.values()]
            queries.append((f"/apis/{SLICE_API_VERSION}{scope}/endpointslices", {"labelSelector": SERVICE_LABEL}))
            secrets = {
                "labelSelector": f"!{RENDERED_LABEL}",
                "fieldSelector": ",".join(f"type!={t}" for t in IGNORED_SECRET_TYPES),
            }
            queries.append((f"/api/v1{scope}/secrets", secrets))
        uids: set[str] = set()
        for path, params in queries:
            token = ""
            while True:
                page = {**params, "limit": "2000", **({"continue": token} if token else {})}
                listing = await self.client.request("GET", path, params=page, accept=_METADATA_LIST)
                uids.update(str((item.get("metadata") or {}).get("uid")) for item in listing.get("items") or ())
                token = (listing.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return uids

    # -- one render ---------------------------------------------------------------------------------------------
    async def render_once(self, *, trigger: str = "direct", waited: float = 0.0) -> Published:
        """Compile and publish. `trigger` and `waited` (what ended the debounce, and after how long) only go to
        the log line, with the number of objects changed since the last write: how many changes one render
        absorbed is what tells an operator (and the burst test) that debouncing works."""
        docs = self.documents()
        changes = len(self._changed_refs)
        started = time.perf_counter()
        result, pieces = await asyncio.to_thread(_compile, docs)
        self._services = set(result.services)
        compiled = time.perf_counter() - started
        try:
            published = await self.publisher.publish(result)
        except Exception as exc:
            self._tell_changed("ConfigWriteFailed", f"cannot write {self.publisher.describe()}: {exc}")
            raise
        self._changed_refs.clear()
        self.published = True
        self._last_cost = time.perf_counter() - started
        generated = await self._generate(result)
        self._start_status_sync(result, published.hash, pieces)
        log.info(
            "config written" if published.written else "config unchanged",
            extra={
                "hash": published.hash,
                "trigger": trigger,
                "waited_seconds": round(waited, 3),
                "changes": changes,
                "objects": len(docs),
                "routes": len(result.config.routes),
                "consumers": len(result.config.consumers),
                "pools": len(result.config.pools),
                "rate_limits": len(result.config.rate_limits),
                "compile_seconds": round(compiled, 4),
                "write_seconds": round(published.seconds, 4),
                "config_bytes": published.config_bytes,
                "stored_bytes": published.config_stored_bytes,
                "shards": published.config_shards,
                "keys_generated": generated,
                "render_seconds": round(time.perf_counter() - started, 4),
            },
        )
        return published

    async def _generate(self, result: CompileResult) -> int:
        created = 0
        for request in result.to_generate:
            slot = (request.namespace, request.secret_name)
            consumer = ObjectRef("Consumer", request.namespace, request.consumer)
            uid = self._uids.get(consumer)
            if slot in self._generated or not uid:
                continue
            try:
                made = await create_generated_secret(self.client, request, uid)
            except KubeError as exc:
                log.warning(
                    "cannot create a consumer key Secret",
                    extra={
                        "consumer": f"{request.namespace}/{request.consumer}",
                        "secret": request.secret_name,
                        "error": str(exc),
                    },
                )
                self._post_event(consumer, "Warning", "KeyGenerationFailed", f"secret {request.secret_name!r}: {exc}")
                continue
            self._generated.add(slot)
            if made:
                created += 1
                log.info(
                    "generated a consumer key",
                    extra={"consumer": f"{request.namespace}/{request.consumer}", "secret": request.secret_name},
                )
                self._post_event(consumer, "Normal", "KeyGenerated", f"created Secret {request.secret_name!r}")
        return created

    def _start_status_sync(self, result: CompileResult, digest: str, pieces: dict[tuple[str, str], str]) -> None:
        """Statuses are patched in the background: a render never waits for thousands of status patches, and a
        newer render replaces an unfinished sync (objects already patched are then simply up to date)."""
        if self._status_task is not None and not self._status_task.done():
            self._status_task.cancel()
        self._status_task = asyncio.create_task(self._sync_statuses(result, digest, pieces), name="tollway statuses")

    async def _sync_statuses(self, result: CompileResult, digest: str, pieces: dict[tuple[str, str], str]) -> int:
        started = time.perf_counter()
        now = now_rfc3339()
        # A consumer whose only unresolved references are keys being generated right now is not worth a Warning.
        generating = Counter(ObjectRef("Consumer", r.namespace, r.consumer) for r in result.to_generate)
        work: list[tuple[ObjectRef, dict[str, Any], dict[str, Any], str | None, bool]] = []
        for ref, status in result.statuses.items():
            if ref not in self._uids:
                continue  # deleted meanwhile
            current = self._status.get(ref) or {}
            piece = pieces.get((ref.kind, f"{ref.namespace}/{ref.name}"))
            carried = self._carried_hash(ref, piece, digest, current, status.generation)
            desired = desired_status(status, in_config=piece is not None, config_hash=carried, current=current, now=now)
            patch = status_patch(current, desired)
            if patch is None:
                self._remember_piece(ref, piece)
            else:
                quiet = not status.invalid and len(status.unresolved) == generating[ref]
                work.append((ref, patch, current, piece, quiet))
        patched = 0
        if work:
            gate = asyncio.Semaphore(self.options.status_concurrency)
            patched = sum(await asyncio.gather(*(self._patch_status(gate, *item) for item in work)))
        log.info(
            "statuses synced",
            extra={
                "hash": digest,
                "patched": patched,
                "failed": len(work) - patched,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        return patched

    def _carried_hash(
        self, ref: ObjectRef, piece: str | None, digest: str, current: dict[str, Any], generation: int | None
    ) -> str | None:
        """The config hash to report: kept while the object compiles to the same thing, else the new one."""
        if piece is None:
            return None
        known = self._pieces.get(ref)
        if known is None and current.get("configHash") and current.get("observedGeneration") == generation:
            return str(current["configHash"])  # first sight since start: trust what the last operator wrote
        if known == piece and current.get("configHash"):
            return str(current["configHash"])
        return digest

    def _remember_piece(self, ref: ObjectRef, piece: str | None) -> None:
        if piece is None:
            self._pieces.pop(ref, None)
        else:
            self._pieces[ref] = piece

    async def _patch_status(
        self,
        gate: asyncio.Semaphore,
        ref: ObjectRef,
        patch: dict[str, Any],
        before: dict[str, Any],
        piece: str | None,
        quiet: bool,
    ) -> int:
        async with gate:
            try:
                response = await self.client.request(
                    "PATCH", status_path(ref), body={"status": patch}, content_type="application/merge-patch+json"
                )
            except KubeError as exc:
                if exc.status != 404:
                    log.warning("cannot patch a status", extra={"object": str(ref), "error": str(exc)})
                return 0
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("cannot patch a status", extra={"object": str(ref), "error": repr(exc)})
                return 0
        if ref not in self._uids:
            return 1  # deleted meanwhile
        status = response.get("status") or {}
        self._status[ref] = status
        self._remember_piece(ref, piece)
        if not quiet:
            for condition in failing_transitions(before.get("conditions"), status.get("conditions") or []):
                self._post_event(ref, "Warning", condition["reason"], f"{condition['type']}: {condition['message']}")
        return 1

    # -- events -------------------------------------------------------------------------------------------------
    def _post_event(self, ref: ObjectRef, kind: str, reason: str, message: str) -> None:
        uid = self._uids.get(ref)
        context = self._events_context
        if not uid or context is None:
            return
        body = kopf.Body(
            {
                "apiVersion": API_VERSION if ref.kind != "Secret" else "v1",
                "kind": ref.kind,
                "metadata": {"name": ref.name, "namespace": ref.namespace, "uid": uid},
            }
        )
        try:
            context.run(kopf.event, body, type=kind, reason=reason, message=message[:1024])
        except (LookupError, RuntimeError) as exc:
            log.debug("cannot post an event", extra={"error": repr(exc)})

    def _tell_changed(self, reason: str, message: str) -> None:
        for ref in sorted(self._changed_refs)[:MAX_CHANGE_EVENTS]:
            if ref.kind not in ("Secret", "EndpointSlice"):
                self._post_event(ref, "Warning", reason, message)


def document(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "Secret":
        return secret_document(body)
    if kind == "EndpointSlice":
        return slice_document(body)
    return cr_document(kind, body)


def slice_document(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an EndpointSlice the compiler reads: its Service, address type, ports and each endpoint's
    addresses and readiness (not its topology, hints or target reference, which change without mattering)."""
    meta = body.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_LABEL)
    return {
        "apiVersion": SLICE_API_VERSION,
        "kind": "EndpointSlice",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "labels": {SERVICE_LABEL: service} if service else {},
        },
        "addressType": body.get("addressType"),
        "ports": [
            {"name": p.get("name"), "port": p.get("port"), "protocol": p.get("protocol")}
            for p in body.get("ports") or ()
            if isinstance(p, dict)
        ],
        "endpoints": [
            {"addresses": e.get("addresses"), "conditions": {"ready": (e.get("conditions") or {}).get("ready")}}
            for e in body.get("endpoints") or ()
            if isinstance(e, dict)
        ],
    }


def cr_document(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a custom resource the compiler reads (no status, no managed fields)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "labels": dict(meta.get("labels") or {}),
        },
        "spec": body.get("spec") or {},
    }


def secret_document(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "data": dict(body.get("data") or {}),
    }
    if body.get("stringData"):
        doc["stringData"] = dict(body["stringData"])
    return doc


def _compile(docs: list[dict[str, Any]]) -> tuple[CompileResult, dict[tuple[str, str], str]]:
    result = compile_crs(docs)
    return result, piece_digests(result)


async def stop(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
