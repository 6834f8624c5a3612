"""EndpointSlices (discovery.k8s.io/v1) as the compiler sees them: the ready addresses behind each Service.

A pool with `endpoints.service` is rendered with one base URL per ready endpoint of that Service: the traffic
goes to the pods directly, so the gateway, not kube-proxy, decides which one serves. The port is matched the way
EndpointSlices carry it: a name matches the Service port's name, a number the pod port the Service targets
(8000, not the Service's own 80); without one, a Service with a single port uses it. An endpoint is ready unless
its `ready` condition says false (the API's advice: an unknown state counts as ready); terminating pods report
false. Only an endpoint's first address is used (the API's advice for consumers), IPv6 in brackets, FQDN as is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .common import CRDoc

API_VERSION = "discovery.k8s.io/v1"
SERVICE_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class SlicePort:
    name: str
    number: int


@dataclass(frozen=True)
class Slice:
    address_type: str  # IPv4 | IPv6 | FQDN
    hosts: tuple[str, ...]  # the first address of each ready endpoint, as a URL host
    ports: tuple[SlicePort, ...]

    def port(self, wanted: int | str | None) -> int | None:
        if wanted is None:
            return self.ports[0].number if len(self.ports) == 1 else None
        for port in self.ports:
            if (port.name if isinstance(wanted, str) else port.number) == wanted:
                return port.number
        return None


@dataclass
class Resolved:
    urls: tuple[str, ...]
    unresolved: list[str]


class SliceIndex:
    """EndpointSlices by (namespace, service name)."""

    def __init__(self, docs: Iterable[CRDoc] = ()):
        self._slices: dict[tuple[str, str], list[Slice]] = {}
        for doc in docs:
            service = doc.labels.get(SERVICE_LABEL)
            parsed = _slice(doc.body)
            if service and parsed is not None:
                self._slices.setdefault((doc.namespace, service), []).append(parsed)

    def resolve(self, namespace: str, service: str, port: int | str | None, scheme: str, path: str) -> Resolved:
        slices = self._slices.get((namespace, service))
        if not slices:
            return Resolved((), [f"service {service!r} has no EndpointSlices"])
        urls: set[str] = set()
        matched = False
        for piece in slices:
            number = piece.port(port)
            if number is None:
                continue
            matched = True
            urls.update(f"{scheme}://{host}:{number}{path}" for host in piece.hosts)
        if not matched and any(piece.hosts for piece in slices):  # a Service scaled to zero lists no ports
            known = sorted({f"{p.name or '(unnamed)'}={p.number}" for s in slices for p in s.ports})
            wanted = "a port" if port is None else f"port {port!r}"
            hint = " (the Service has several: name one)" if port is None and len(known) > 1 else ""
            ports = ", ".join(known) or "none"
            return Resolved((), [f"service {service!r} has no {wanted} in its EndpointSlices{hint}; ports: {ports}"])
        return Resolved(tuple(sorted(urls)), [])


def _slice(body: dict[str, Any]) -> Slice | None:
    address_type = body.get("addressType")
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        return None
    ports = []
    for item in body.get("ports") or ():
        if not isinstance(item, dict) or (item.get("protocol") or "TCP") != "TCP":
            continue
        number = item.get("port")
        if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 65536:
            ports.append(SlicePort(str(item.get("name") or ""), number))
    hosts = []
    for endpoint in body.get("endpoints") or ():
        if not isinstance(endpoint, dict):
            continue
        conditions = endpoint.get("conditions") or {}
        addresses = endpoint.get("addresses") or ()
        if conditions.get("ready") is False or not addresses or not isinstance(addresses[0], str):
            continue
        hosts.append(f"[{addresses[0]}]" if address_type == "IPv6" else addresses[0])
    return Slice(address_type, tuple(hosts), tuple(ports))
