"""Consumer: a person, team or application calling the gateway with its own API keys."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from tollway_contract.model import Consumer

from ..status import ObjectStatus
from .common import CRDoc, SpecReader, spec_of
from .secret import SecretStore

DEFAULT_KEY = "apiKey"
# Added to every consumer's labels so that an AIRoute's consumerSelector only selects its own namespace.
NAMESPACE_LABEL = "tollway.dev/namespace"


@dataclass(frozen=True)
class CredentialRequest:
    """A credential whose Secret the operator should generate (generate: true and the Secret is missing)."""

    namespace: str
    consumer: str
    secret_name: str
    key: str


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()


def compile_consumer(
    doc: CRDoc, secrets: SecretStore, status: ObjectStatus, to_generate: list[CredentialRequest]
) -> Consumer | None:
    r = SpecReader()
    spec = spec_of(doc, r)
    credentials = r.items(spec.get("credentials"), "spec.credentials")
    if not credentials:
        r.fail("spec.credentials", "must hold at least one credential")
    hashes: list[str] = []
    for i, item in enumerate(credentials):
        path = f"spec.credentials[{i}]"
        cred = r.obj(item, path)
        ref = r.obj(cred.get("secretRef"), f"{path}.secretRef")
        secret_name = r.str_(ref, "name", f"{path}.secretRef", required=True)
        data_key = r.str_(ref, "key", f"{path}.secretRef") or DEFAULT_KEY
        if secret_name is None:
            continue
        data = secrets.get(doc.qualify(secret_name))
        if data is None:
            if cred.get("generate") is True:
                to_generate.append(CredentialRequest(doc.namespace, doc.name, secret_name, data_key))
                status.unresolved.append(f"secret {secret_name!r} not found; the operator will generate it")
            else:
                status.unresolved.append(f"secret {secret_name!r} not found")
            continue
        value = data.get(data_key, "").strip()
        if data_key not in data:
            status.unresolved.append(f"secret {secret_name!r} has no key {data_key!r}")
        elif not value:
            status.unresolved.append(f"secret {secret_name!r} key {data_key!r} is empty")
        else:
            hashes.append(hash_api_key(value))
    source_ips = r.strings(spec, "sourceIPs", "spec")
    for i, cidr in enumerate(source_ips):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            r.fail(f"spec.sourceIPs[{i}]", f"{cidr!r} is not an IP address or CIDR")
    status.extra["credentialCount"] = len(hashes)
    status.invalid.extend(r.problems)
    if status.rejected:
        return None
    labels = dict(doc.labels)
    labels[NAMESPACE_LABEL] = doc.namespace
    return Consumer(
        name=doc.qualified_name,
        key_hashes=tuple(sorted(set(hashes))),
        labels=tuple(sorted(labels.items())),
        source_ips=source_ips,
    )
