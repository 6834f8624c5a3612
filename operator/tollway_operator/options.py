"""How an operator process is told what to watch and where to write (the `tollway operator` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from tollway_contract.rendered import DEFAULT_CONFIGMAP, MAX_OBJECT_BYTES, default_secret_name


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()  # watched namespaces; empty with all_namespaces=True: the whole cluster
    all_namespaces: bool = False
    target_namespace: str = ""  # where the rendered ConfigMap and Secret go; default: the first watched namespace
    configmap: str = DEFAULT_CONFIGMAP
    secret: str = ""  # default: derived from configmap (tollway-config -> tollway-provider-keys)
    debounce: float = 0.2  # quiet time after the last change before a render
    max_delay: float = 2.0  # a steady stream of changes still renders at least this often
    peering: str | None = None  # kopf peering object name; None: standalone (one replica)
    priority: int | None = None  # kopf peering priority; None: random with peering (replicas must not tie)
    kubeconfig: str | None = None
    max_object_bytes: int = MAX_OBJECT_BYTES  # split rendered documents into shards above this size
    status_concurrency: int = 32  # status patches in flight at once
    resync: float = 300.0  # seconds between full re-renders that repair drift (standalone mode only)
    liveness: str | None = None  # e.g. http://0.0.0.0:8080/healthz (kopf's liveness endpoint)
    readiness: str | None = None  # e.g. http://0.0.0.0:8082/readyz (ready once the first render is published)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.all_namespaces and not self.namespaces:
            raise ValueError("give --namespace NS (repeatable) or --all-namespaces")
        if self.all_namespaces and self.namespaces:
            raise ValueError("--namespace and --all-namespaces are mutually exclusive")
        if not self.target_namespace and not self.namespaces:
            raise ValueError("--all-namespaces needs --target-namespace")
        if self.debounce < 0 or self.max_delay < self.debounce:
            raise ValueError("--debounce must be >= 0 and not above the maximum delay")

    @property
    def target(self) -> str:
        return self.target_namespace or self.namespaces[0]

    @property
    def secret_name(self) -> str:
        return self.secret or default_secret_name(self.configmap)
