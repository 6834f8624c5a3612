"""`tollway operator`: run the kopf operator embedded, with Tollway's handlers and settings.

High availability: run ONE replica (a Deployment with the Recreate strategy); a brief gap during a restart only
delays new changes, the data plane keeps serving the last written config. With `--peering NAME` kopf's peering
(a KopfPeering object, namespaced or cluster-wide, created beforehand with kopf's peering CRDs) lets several
replicas run with only the highest-priority one active; the periodic resync is off in that mode so a standby
replica never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import kopf
from tollway_kube.client import KubeCredentials

from . import handlers
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
    memo = kopf.Memo(state=handlers.State(options=options, credentials=credentials))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            kopf.operator(
                registry=handlers.registry,
                memo=memo,
                standalone=options.peering is None,
                peering_name=options.peering,
                priority=options.priority,
                clusterwide=options.all_namespaces,
                namespaces=list(options.namespaces),
                liveness_endpoint=options.liveness,
            )
        )
    return 0
