"""`tollway operator`: run the kopf operator embedded, with Tollway's handlers and settings.

High availability: run ONE replica (a Deployment with the Recreate strategy); a brief gap during a restart only
delays new changes, the data plane keeps serving the last written config. With `--peering NAME` kopf's peering
lets several replicas run with only the highest-priority one active (see `peering.py`: the peering objects are
created here when missing, kopf's peering CRDs must be installed); the periodic resync is off in that mode so a
standby replica never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

import kopf
from tollway_kube.client import KubeClient, KubeCredentials, KubeError

from . import handlers, peering
from .options import OperatorOptions

log = logging.getLogger("tollway.operator")


class _KopfExtras(logging.Filter):
    """kopf attaches its whole settings object (and an event-posting flag) to per-object log records; keep the
    object reference, drop the rest, so that each log line stays one short JSON object."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attribute in ("settings", "k8s_skip"):
            record.__dict__.pop(attribute, None)
        return True


def run(options: OperatorOptions) -> int:
    for handler in logging.getLogger().handlers:
        handler.addFilter(_KopfExtras())
    # One line per handled object and event ("Handler ... succeeded") is noise at 10,000 objects.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        credentials = KubeCredentials.load(options.kubeconfig)
    except Exception as exc:  # the client's config loaders raise several kinds
        log.critical("cannot load Kubernetes credentials", extra={"error": str(exc)})
        return 2
    options = dataclasses.replace(options, priority=peering.effective_priority(options))
    state = handlers.State(options=options, credentials=credentials, identity=peering.own_identity())
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_operate(state))
    return 0


async def _operate(state: handlers.State) -> int:
    options = state.options
    if options.peering:
        client = KubeClient(state.credentials)
        try:
            created = await peering.ensure_objects(client, options)
        except KubeError as exc:
            hint = " (install kopf's peering CRDs: the chart does with operator.peering)" if exc.status == 404 else ""
            log.critical("cannot prepare the peering objects" + hint, extra={"error": str(exc)})
            return 2
        finally:
            await client.close()
        if created:
            log.info("peering objects created", extra={"peering": options.peering, "count": created})
    identity: Any = state.identity  # kopf types it as its own NewType of str
    await kopf.operator(
        registry=handlers.registry,
        memo=kopf.Memo(state=state),
        standalone=options.peering is None,
        peering_name=options.peering,
        priority=options.priority or 0,
        identity=identity,
        clusterwide=options.all_namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness,
    )
    return 0
