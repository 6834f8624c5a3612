"""kopf peering as the operator uses it: who this replica is, the peering objects it needs, whether it stands by.

With `--peering NAME`, kopf keeps one `KopfPeering` object NAME in every watched namespace (a `ClusterKopfPeering`
with `--all-namespaces`) in which each replica records its identity, priority and a heartbeat; a replica that sees
a live peer with a higher priority pauses, and one that sees a peer with the same priority pauses too. So:

* the objects must exist before kopf starts, or kopf quietly runs every replica standalone: `ensure_objects`
  creates the missing ones (kopf's peering CRDs must be installed; the chart does that);
* replicas of one Deployment share their arguments, so a replica without an explicit `--priority` draws a random
  one (`effective_priority`) instead of tying at 0 and pausing all of them;
* a replica waiting for its turn is healthy, so readiness asks `is_standby` (a live peer with a higher priority
  in the peering object) instead of waiting for a first render that a standby never makes.
"""

from __future__ import annotations

import datetime
import os
import random
import secrets
import socket
from typing import Any
from urllib.parse import quote

from tollway_kube.client import KubeClient, KubeError

from .options import OperatorOptions

GROUP_VERSION = "kopf.dev/v1"


def own_identity() -> str:
    """How this replica appears in the peering objects: the pod (host) name, process and a random suffix."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def effective_priority(options: OperatorOptions) -> int:
    if options.priority is not None:
        return options.priority
    return random.randint(1, 2**31 - 1) if options.peering else 0


def _paths(options: OperatorOptions, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) for every peering object the options need."""
    if options.all_namespaces:
        body = {"apiVersion": GROUP_VERSION, "kind": "ClusterKopfPeering", "metadata": {"name": name}}
        return [(f"/apis/{GROUP_VERSION}/clusterkopfpeerings", body)]
    out = []
    for namespace in options.namespaces:
        body = {"apiVersion": GROUP_VERSION, "kind": "KopfPeering", "metadata": {"name": name, "namespace": namespace}}
        out.append((f"/apis/{GROUP_VERSION}/namespaces/{quote(namespace)}/kopfpeerings", body))
    return out


async def ensure_objects(client: KubeClient, options: OperatorOptions) -> int:
    """Create the peering objects that do not exist yet; the number created. A missing CRD is a KubeError 404."""
    assert options.peering is not None
    created = 0
    for collection, body in _paths(options, options.peering):
        if await client.get(f"{collection}/{quote(options.peering)}") is not None:
            continue
        try:
            await client.request("POST", collection, body=body)
            created += 1
        except KubeError as exc:
            if exc.status != 409:  # another replica created it meanwhile: fine
                raise
    return created


def live_peers_above(status: dict[str, Any], identity: str, priority: int, now: datetime.datetime) -> list[str]:
    """The identities of live peers (heartbeat within their lifetime) with a higher priority than ours."""
    above = []
    for peer, info in status.items():
        if peer == identity or not isinstance(info, dict):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            peer_priority = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen + lifetime > now and peer_priority > priority:
            above.append(peer)
    return above


async def is_standby(client: KubeClient, options: OperatorOptions, identity: str, priority: int) -> bool:
    """Whether another replica with a higher priority is active: then this one waits, and that is healthy."""
    assert options.peering is not None
    now = datetime.datetime.now(datetime.UTC)
    for collection, _ in _paths(options):
        peering = await client.get(f"{collection}/{quote(options.peering)}")
        if peering and live_peers_above(peering.get("status") or {}, identity, priority, now):
            return True
    return False
