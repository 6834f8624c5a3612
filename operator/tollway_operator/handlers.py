"""kopf registration: every handler the operator has, in one place.

* login: the same credentials as the operator's own API client (kubeconfig, in-cluster, KUBECONFIG).
* startup/cleanup: operator settings, then the controller's render loop (`controller.py`) and the readiness
  endpoint (`readiness.py`).
* one event handler per watched kind (the four Tollway kinds, Secrets, and EndpointSlices that belong to a
  Service): hands the object to the controller, which keeps what the compiler reads and ignores changes that do
  not matter (status, annotations, slices of Services no pool names).

Handlers are coroutines: kopf runs plain functions in a thread pool, and these are quick bookkeeping that
belongs on the event loop with the controller.

Nothing here writes to the watched objects (no finalizers, no annotations): deleting a CR never waits for the
operator, and the operator needs no `patch` on the objects themselves, only on their `/status`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import kopf
from tollway_contract.rendered import RENDERED_LABEL
from tollway_kube.client import KubeClient, KubeCredentials

from . import peering
from .controller import IGNORED_SECRET_TYPES, PLURALS, Controller, stop
from .options import OperatorOptions
from .readiness import ReadinessServer
from .resources.common import GROUP, VERSION
from .resources.endpointslice import SERVICE_LABEL

registry = kopf.OperatorRegistry()
log = logging.getLogger("tollway.operator")


@dataclass
class State:
    """Shared by every handler through kopf's memo (kopf hands each object a shallow copy of the root memo)."""

    options: OperatorOptions  # with the effective peering priority
    credentials: KubeCredentials
    identity: str = ""  # this replica in the peering objects
    controller: Controller | None = None
    client: KubeClient | None = None
    task: asyncio.Task[None] | None = None
    readiness: ReadinessServer | None = None

    async def ready(self) -> tuple[bool, str]:
        if self.controller is not None and self.controller.published:
            return True, "config published"
        options, client = self.options, self.client
        standby = (
            options.peering is not None
            and client is not None
            and await peering.is_standby(client, options, self.identity, options.priority or 0)
        )
        if standby:
            return True, "standing by: a peer with a higher priority is active"
        return False, "listing, compiling and publishing the watched objects"


def _state(memo: Any) -> State:
    return memo.state  # type: ignore[no-any-return]


# -- process ------------------------------------------------------------------------------------------------------


@kopf.on.login(registry=registry)
async def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    credentials = _state(memo).credentials
    token = credentials.token()
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=credentials.ca_path,
        insecure=credentials.insecure,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=credentials.cert_path,
        private_key_path=credentials.key_path,
    )


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    state = _state(memo)
    options = state.options
    settings.posting.reporting_component = "tollway-operator"
    settings.posting.level = logging.WARNING  # kopf's own per-object chatter stays in the log, not in Events
    settings.peering.standalone = options.peering is None
    settings.peering.priority = options.priority or 0
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = (0.5, 1, 2, 4, 8, 15, 30, 60)  # about two minutes of API trouble
    state.client = KubeClient(state.credentials)
    state.controller = Controller(options, state.client)
    state.task = asyncio.create_task(state.controller.run(), name="tollway render loop")
    state.task.add_done_callback(_render_loop_ended)
    if options.readiness:
        state.readiness = ReadinessServer(options.readiness, state.ready)
        await state.readiness.start()
    log.info(
        "operator started",
        extra={
            "watching": "all namespaces" if options.all_namespaces else list(options.namespaces),
            "target": f"{options.target}/{options.configmap} + secret {options.secret_name}",
            "mode": f"peering {options.peering} as {state.identity}, priority {options.priority}"
            if options.peering
            else "standalone",
            "api": state.credentials.server,
        },
    )


def _render_loop_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("the render loop stopped", exc_info=task.exception())


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: Any, **_: Any) -> None:
    state = _state(memo)
    await stop(state.task)
    if state.readiness is not None:
        await state.readiness.stop()
    if state.client is not None:
        await state.client.close()


# -- what is watched ----------------------------------------------------------------------------------------------


def _input_secret(body: kopf.Body, **_: Any) -> bool:
    """Secrets the compiler may read: not the operator's own output, not Helm releases or legacy SA tokens."""
    return body.get("type") not in IGNORED_SECRET_TYPES


_SECRET_FILTERS: dict[str, Any] = {"labels": {RENDERED_LABEL: kopf.ABSENT}, "when": _input_secret}


def _observe(kind: str, type: str | None, body: kopf.Body, memo: Any) -> None:
    controller = _state(memo).controller
    if controller is not None:
        controller.observe(kind, type, body)


@kopf.on.event(GROUP, VERSION, PLURALS["AIRoute"], registry=registry, id="airoute-changed")
async def airoute_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("AIRoute", type, body, memo)


@kopf.on.event(GROUP, VERSION, PLURALS["Consumer"], registry=registry, id="consumer-changed")
async def consumer_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("Consumer", type, body, memo)


@kopf.on.event(GROUP, VERSION, PLURALS["ProviderKeyPool"], registry=registry, id="providerkeypool-changed")
async def providerkeypool_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("ProviderKeyPool", type, body, memo)


@kopf.on.event(GROUP, VERSION, PLURALS["TokenRateLimit"], registry=registry, id="tokenratelimit-changed")
async def tokenratelimit_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("TokenRateLimit", type, body, memo)


@kopf.on.event("v1", "secrets", registry=registry, id="secret-changed", **_SECRET_FILTERS)
async def secret_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("Secret", type, body, memo)


@kopf.on.event(
    "discovery.k8s.io",
    "v1",
    "endpointslices",
    registry=registry,
    id="endpointslice-changed",
    labels={SERVICE_LABEL: kopf.PRESENT},
)
async def endpointslice_changed(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    _observe("EndpointSlice", type, body, memo)
