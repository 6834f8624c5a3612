"""How stage settings in an AIRoute's spec refer to other objects: durations, pools and Secrets.

The contract's stage readers (see tollway_contract.references) read a spec and a rendered config alike and ask a
resolver for the three things that differ. This is the spec's resolver: durations are strings ("2s"), a pool
is a ProviderKeyPool of the route's namespace (qualified; a protocol the stage cannot call is a spec error), and
a credential is a Secret reference that becomes ids whose values are collected for the secrets document, exactly
as a pool's keys are: the rendered config never holds a credential's value.

A reference that does not resolve (a pool or Secret not there yet) is reported in the status but kept: unlike a
backend, a checker cannot simply be left out, because the rule would then serve unchecked. The data plane finds
no pool or no value behind it and treats the checker as failing, so the guardrails' failurePolicy decides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tollway_contract.reader import FieldReader

from ..status import ObjectStatus
from .common import CRDoc, SpecReader
from .secret import SecretStore

_FAILS = "what uses it fails (its failurePolicy applies) until it resolves"


class SpecResolver:
    def __init__(
        self,
        doc: CRDoc,
        pools: Mapping[str, str],  # accepted pools: qualified name -> provider
        rejected_pools: Collection[str],
        secrets: SecretStore,
        status: ObjectStatus,
    ):
        self._doc = doc
        self._pools = pools
        self._rejected = rejected_pools
        self._secrets = secrets
        self._status = status
        self.values: dict[str, str] = {}  # credential values by id, for the secrets document

    def seconds(
        self, r: FieldReader, data: dict[str, Any], key: str, path: str, *, maximum: float | None = None
    ) -> float | None:
        if isinstance(r, SpecReader):
            return r.duration(data, key, path, maximum=maximum)
        return r.seconds(data, key, path, None)

    def pool(self, r: FieldReader, data: dict[str, Any], key: str, path: str, providers: tuple[str, ...]) -> str | None:
        name = r.str_(data, key, path, required=True)
        if name is None:
            return None
        qualified = self._doc.qualify(name)
        provider = self._pools.get(qualified)
        where = f"{path}.{key}"
        if qualified in self._rejected:
            self._status.unresolved.append(f"{where}: pool {name!r} is not accepted (see its status); {_FAILS}")
        elif provider is None:
            self._status.unresolved.append(f"{where}: pool {name!r} not found; {_FAILS}")
        elif provider not in providers:
            r.fail(f"{path}.{key}", f"pool {name!r} speaks {provider}; this needs one of: {', '.join(providers)}")
            return None
        return qualified

    def credentials(
        self, r: FieldReader, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, str] | None:
        """`{secretRef: {name, key?}}`: with one required name (a token), `key` picks the Secret's data key
        (default: that name); with several (an AccessKey), the Secret holds them under their own names."""
        ref = r.obj(r.obj(value, path).get("secretRef"), f"{path}.secretRef")
        secret_name = r.str_(ref, "name", f"{path}.secretRef", required=True)
        data_key = r.str_(ref, "key", f"{path}.secretRef")
        if data_key is not None and (len(required) != 1 or optional):
            r.fail(f"{path}.secretRef.key", f"is not used here: the Secret holds {', '.join(required + optional)}")
        if secret_name is None:
            return None
        data = self._secrets.get(self._doc.qualify(secret_name))
        where = f"{path}.secretRef"
        if data is None:
            self._status.unresolved.append(f"{where}: secret {secret_name!r} not found; {_FAILS}")
            data = {}
        self._status.unresolved.extend(self._secrets.problems.get(self._doc.qualify(secret_name), []))
        wanted = {name: (data_key if data_key is not None and len(required) == 1 else name) for name in required}
        wanted |= {name: name for name in optional}
        ids: dict[str, str] = {}
        for name, key in wanted.items():
            # The id names where the value lives, never what it is: stable across reloads and safe to log.
            key_id = f"{self._doc.namespace}/{secret_name}/{key}"
            value = data.get(key, "").strip()
            if value:
                ids[name] = key_id
                self.values[key_id] = value
            elif name in required:
                ids[name] = key_id  # kept without a value: the checker fails until the Secret has it
                if data:
                    self._status.unresolved.append(f"{where}: secret {secret_name!r} has no key {key!r}; {_FAILS}")
        return ids
