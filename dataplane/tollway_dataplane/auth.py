"""Who is calling: the client key from any of the usual headers, hashed and looked up; source networks checked."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from tollway_contract.model import Access, Consumer, Route

from .errors import GatewayError
from .inbound_headers import client_key

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class ConsumerIdentity:
    """A consumer as the request path needs it; remembers which routes it may use."""

    name: str
    labels: dict[str, str]
    networks: tuple[IPNetwork, ...]
    allowed_routes: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def from_config(cls, consumer: Consumer) -> ConsumerIdentity:
        networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in consumer.source_ips)
        return cls(name=consumer.name, labels=dict(consumer.labels), networks=networks)

    def may_use(self, route: Route) -> bool:
        allowed = self.allowed_routes.get(route.name)
        if allowed is None:
            allowed = self.allowed_routes[route.name] = _allows(route.access, self)
        return allowed

    def source_allowed(self, remote: str | None) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def _allows(access: Access, consumer: ConsumerIdentity) -> bool:
    if access.open or consumer.name in access.consumers:
        return True
    return any(all(consumer.labels.get(k) == v for k, v in selector) for selector in access.selectors)


class Authenticator:
    def __init__(self, consumers: tuple[Consumer, ...]):
        self._by_hash: dict[str, ConsumerIdentity] = {}
        for consumer in consumers:
            identity = ConsumerIdentity.from_config(consumer)
            for key_hash in consumer.key_hashes:
                self._by_hash[key_hash] = identity

    def authenticate(self, headers: Mapping[str, str], remote: str | None) -> tuple[ConsumerIdentity, str]:
        """The consumer and the hash of the key it used, or a 401 that says what is wrong."""
        key = client_key(headers)
        if key is None:
            raise GatewayError(
                401,
                "Missing API key: send it as 'Authorization: Bearer <key>' (or an x-api-key / api-key header).",
                "missing_api_key",
            )
        key_hash = hashlib.sha256(key).hexdigest()  # the bytes as sent: a key that is not UTF-8 matches nothing
        identity = self._by_hash.get(key_hash)
        if identity is None:
            raise GatewayError(401, "Invalid API key.", "invalid_api_key")
        if not identity.source_allowed(remote):
            raise GatewayError(403, "This API key is not allowed from this network address.", "source_not_allowed")
        return identity, key_hash
