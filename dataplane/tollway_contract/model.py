"""The data plane's configuration contract: immutable, typed, free of Kubernetes.

A hand-written config file and an operator-rendered ConfigMap are the same document. Durations are seconds
(floats); names of namespaced objects are "namespace/name". Provider API key values never appear here: pools
name their keys by a stable id and the values travel in the separate `SecretsConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = 1

PROVIDERS = ("openai", "openai-compatible", "azure-openai", "anthropic", "gemini")
SELECTIONS = ("round-robin", "random", "least-in-flight")
RETRY_CONDITIONS = ("429", "5xx", "4xx", "connect-error", "timeout", "reset")
LIMIT_COUNTS = ("total", "input", "output")
FAILURE_POLICIES = ("open", "closed")
DECORATOR_ROLES = ("system", "developer", "user", "assistant")
PICKERS = ("least-load", "prefix-affinity", "round-robin")
METRIC_FORMATS = ("vllm", "sglang")
DEFAULT_PREFIX_CHARS = 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LIMIT_MESSAGE = "Rate limit exceeded, please try again later."


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float | None = None
    first_byte: float | None = None
    idle: float | None = None
    total: float | None = None

    def overlaid(self, other: Timeouts | None) -> Timeouts:
        """This set with every value that `other` defines taking precedence."""
        if other is None:
            return self
        return Timeouts(
            connect=other.connect if other.connect is not None else self.connect,
            first_byte=other.first_byte if other.first_byte is not None else self.first_byte,
            idle=other.idle if other.idle is not None else self.idle,
            total=other.total if other.total is not None else self.total,
        )


@dataclass(frozen=True, slots=True)
class Cooldown:
    default: float = 30.0
    max: float = 600.0
    # Inclusive status ranges; a single status is (s, s).
    statuses: tuple[tuple[int, int], ...] = ((401, 401), (403, 403), (429, 429), (500, 599))

    def applies_to(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.statuses)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """One provider API key, by identity. Derived from the Secret name and data key so it survives reloads."""

    id: str


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for the models matching `model` (an exact name or a glob)."""

    model: str
    input: float
    output: float
    cached_input: float | None = None  # None: cached input costs the input price


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """Where and how often the data plane scrapes each endpoint's own metrics (Prometheus text)."""

    format: str  # one of METRIC_FORMATS: which metric names carry the queue, running and KV-cache figures
    path: str = "/metrics"  # on the endpoint's scheme, host and port
    interval: float = 1.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    """The model servers behind one pool, each a base URL like `baseURL`, and how a request picks one.

    The operator renders `urls` from a Service's EndpointSlices (or copies a static list); the data plane only
    reads them. Stale metrics (no scrape for 3 intervals), a recent failure (`cooldown`) or a queue at `max_queue`
    take an endpoint out of the pick; when every endpoint is at `max_queue` the pool is saturated.
    """

    urls: tuple[str, ...] = ()
    picker: str = "least-load"  # one of PICKERS
    metrics: EndpointMetrics | None = None  # None: no scraping; the load is this gateway's own in-flight count
    max_queue: int | None = None  # None: no limit
    prefix_chars: int = DEFAULT_PREFIX_CHARS  # prefix-affinity: how much of the prompt's start is hashed
    cooldown: float = 10.0  # an endpoint whose request failed (connect error, 5xx, ...) is skipped this long


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    provider: str
    base_url: str  # empty when `endpoints` is set: every attempt then uses the base URL of the endpoint it picked
    keys: tuple[PoolKey, ...] = ()
    selection: str = "round-robin"
    cooldown: Cooldown = field(default_factory=Cooldown)
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: tuple[tuple[str, str], ...] = ()
    azure_api_version: str | None = None
    pricing: tuple[Price, ...] = ()
    endpoints: Endpoints | None = None


@dataclass(frozen=True, slots=True)
class Backend:
    pool: str
    model: str | None = None  # None: forward the requested model name unchanged
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Retry:
    attempts: int = 2
    retry_on: tuple[str, ...] = ("429", "5xx", "connect-error", "timeout", "reset")


@dataclass(frozen=True, slots=True)
class DecoratorMessage:
    role: str  # one of DECORATOR_ROLES
    content: str  # a template (tollway_contract.templates): literal text and {variables}


@dataclass(frozen=True, slots=True)
class PromptDecorator:
    """Messages added to every chat request of a rule: before the caller's (`prepend`) and after (`append`)."""

    prepend: tuple[DecoratorMessage, ...] = ()
    append: tuple[DecoratorMessage, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    models: tuple[str, ...]
    backends: tuple[Backend, ...]
    fallbacks: tuple[Backend, ...] = ()
    retry: Retry = field(default_factory=Retry)
    timeouts: Timeouts | None = None
    # Stages (DESIGN section 7). The compiler puts the route-wide setting on every rule that does not set its own.
    prompt_decorator: PromptDecorator | None = None


@dataclass(frozen=True, slots=True)
class Access:
    """Who may use a route. Empty consumers and selectors: any authenticated consumer."""

    consumers: tuple[str, ...] = ()  # "namespace/name"
    selectors: tuple[tuple[tuple[str, str], ...], ...] = ()  # each a set of label pairs that must all match

    @property
    def open(self) -> bool:
        return not self.consumers and not self.selectors


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    rules: tuple[Rule, ...]
    hosts: tuple[str, ...] = ()
    path_prefix: str = "/v1"
    access: Access = field(default_factory=Access)


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    key_hashes: tuple[str, ...]  # SHA-256 hex digests of the consumer's API keys
    labels: tuple[tuple[str, str], ...] = ()
    source_ips: tuple[str, ...] = ()  # CIDRs; empty: any source


@dataclass(frozen=True, slots=True)
class Limit:
    window: float
    tokens: int | None = None
    requests: int | None = None
    count: str = "total"  # which tokens a token limit counts: total | input | output


@dataclass(frozen=True, slots=True)
class LimitOverride:
    match: tuple[tuple[str, str], ...]
    limits: tuple[Limit, ...]


@dataclass(frozen=True, slots=True)
class RateLimit:
    name: str
    routes: tuple[str, ...]  # route names the limit applies to
    key: tuple[str, ...] = ("consumer",)
    limits: tuple[Limit, ...] = ()
    overrides: tuple[LimitOverride, ...] = ()
    message: str = DEFAULT_LIMIT_MESSAGE
    failure_policy: str = "open"
    default_max_tokens: int = 1024


@dataclass(frozen=True, slots=True)
class Settings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    version: int = SCHEMA_VERSION
    hash: str = ""
    pools: tuple[Pool, ...] = ()
    routes: tuple[Route, ...] = ()
    consumers: tuple[Consumer, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True, slots=True)
class SecretsConfig:
    """Provider key values by key id. Carries the hash of the config it belongs to."""

    version: int = SCHEMA_VERSION
    hash: str = ""
    keys: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never print key values
        return f"SecretsConfig(version={self.version}, hash={self.hash!r}, keys=<{len(self.keys)} redacted>)"
