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
CACHE_MODES = ("exact", "semantic")
CACHE_SCOPES = ("consumer", "route")
GUARDRAIL_DIRECTIONS = ("request", "response", "both")
GUARDRAIL_ACTIONS = ("block", "mask", "audit")
GUARDRAIL_ON_BLOCK = ("error", "completion")
CHECKER_TYPES = ("rules", "openai-moderation", "llm-judge", "aliyun-moderation", "webhook")
MASKING_CHECKERS = ("rules", "webhook")  # the checkers that say what to replace; the others only classify
PII_DETECTORS = ("email", "phone", "credit-card", "cn-id-card", "ipv4", "api-key")
JUDGE_FORMATS = ("llama-guard", "qwen3guard", "granite-guardian", "shieldgemma")
ALIYUN_RISK_LEVELS = ("low", "medium", "high")
GUARDRAIL_SCOPES = ("system", "user", "assistant", "tool")  # which of the caller's texts a checker reads
DEFAULT_GUARDRAIL_MESSAGE = "This request was blocked by the content policy."
SEARCH_MODES = ("auto", "always", "off")
SEARCH_ENGINES = ("searxng", "tavily", "google", "quark", "arxiv", "elasticsearch")
SEARCH_CITATIONS = ("annotations", "references", "both")
SEARCH_TEMPLATE_VARIABLES = ("date", "results", "question")
SEARCH_KEYED_ENGINES = ("tavily", "google", "quark")  # engines that cannot work without an API key
PICKERS = ("least-load", "prefix-affinity", "round-robin")
METRIC_FORMATS = ("vllm", "sglang")
DEFAULT_PREFIX_CHARS = 1024
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_LIMIT_MESSAGE = "Rate limit exceeded, please try again later."
USD_UNITS = 1_000_000  # money budgets are counted in micro-dollars: integers, as GCRA needs


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
class SemanticCache:
    """Similarity matching of the last user turn, inside an exact partition."""

    pool: str  # the ProviderKeyPool that serves the embedding model
    model: str
    threshold: float = 0.92  # cosine similarity at or above which a stored answer is served
    dimensions: int | None = None  # asked of the embedding model when set
    shadow: bool = False  # never serve semantic hits: count them and compare with the real answer


@dataclass(frozen=True, slots=True)
class Cache:
    mode: str = "exact"  # exact | semantic
    ttl: float = 600.0
    scope: str = "consumer"  # consumer | route: who may share an entry
    max_entry_bytes: int = 1024 * 1024
    cache_tool_calls: bool = False
    coalesce: bool = True  # concurrent identical misses wait for one upstream call
    prompt_cache_key: bool = True  # send OpenAI's prompt_cache_key (consumer + system-prompt hash) to OpenAI pools
    semantic: SemanticCache | None = None


@dataclass(frozen=True, slots=True)
class RulesSettings:
    """Regular expressions, literal keywords and built-in PII detectors, run in the gateway itself."""

    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    ignore_case: bool = False  # for patterns and keywords alike
    detectors: tuple[str, ...] = ()  # PII_DETECTORS
    replacement: str = "[MASKED]"  # what a pattern or keyword match becomes under `mask`; detectors use [EMAIL], ...


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    """An OpenAI-compatible `/moderations` API behind a pool."""

    pool: str
    model: str = "omni-moderation-latest"
    categories: tuple[str, ...] = ()  # the categories that count; empty: every flagged category
    thresholds: tuple[tuple[str, float], ...] = ()  # category -> score at or above which it counts


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """A guard model served OpenAI-compatibly behind a pool, its answer read by the parser for `format`."""

    pool: str
    model: str
    format: str  # JUDGE_FORMATS
    block_on: tuple[str, ...] = ()  # categories or severities that count; empty: any unsafe verdict


@dataclass(frozen=True, slots=True)
class AliyunSettings:
    """Alibaba Cloud Content Moderation (TextModerationPlus), signed with an AccessKey whose values travel in the
    secrets document: the fields below are ids into `SecretsConfig.keys`, never the values."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    region: str = "cn-shanghai"
    endpoint: str | None = None  # a full URL; default https://green-cip.{region}.aliyuncs.com
    risk_level: str = "high"  # the lowest RiskLevel that counts (ALIYUN_RISK_LEVELS)
    advice_as_message: bool = False  # the service's suggested answer becomes the message the caller reads


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """A guardrail server speaking LiteLLM's generic guardrail API."""

    url: str
    token: str | None = None  # id of a bearer token in the secrets document


CheckerSettings = RulesSettings | ModerationSettings | JudgeSettings | AliyunSettings | WebhookSettings


@dataclass(frozen=True, slots=True)
class Checker:
    name: str
    type: str  # CHECKER_TYPES; says which settings class `settings` is
    settings: CheckerSettings
    action: str = "block"  # GUARDRAIL_ACTIONS
    direction: str = "both"  # request | response | both (the guardrails' direction when the checker sets none)
    scope: tuple[str, ...] = GUARDRAIL_SCOPES  # which of the caller's texts it reads and masks (request side)


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Content safety for a rule: checkers on the request, the answer, or both (streams held back by a window)."""

    checkers: tuple[Checker, ...]
    failure_policy: str = "closed"  # a checker that errs or times out: open lets the text pass, closed blocks
    timeout: float = 2.0  # seconds, per checker call
    stream_window: int = 256  # characters of a streamed answer held back until the checkers passed them
    message: str = DEFAULT_GUARDRAIL_MESSAGE
    on_block: str = "error"  # error (400, code content_filter) | completion (200, finish_reason content_filter)


@dataclass(frozen=True, slots=True)
class SearchEngine:
    """One search backend. Credential values never appear here: `credentials` maps what the engine needs
    (`apiKey`, Google's `cx`) to secret ids whose values travel in the secrets document, as pool keys do."""

    type: str  # one of SEARCH_ENGINES
    name: str  # unique within the webSearch setting; the metrics' `engine` label (default: the type)
    url: str | None = None  # the service's base URL; None: the engine's public endpoint
    timeout: float | None = None  # None: the webSearch timeout
    credentials: tuple[tuple[str, str], ...] = ()  # (field, secret id)
    # Elasticsearch: the index, the fields matched, and the fields shown as title, URL and snippet.
    index: str | None = None
    match_fields: tuple[str, ...] = ()
    title_field: str = "title"
    url_field: str | None = None  # None: the document's own _doc URL
    snippet_field: str = "content"


@dataclass(frozen=True, slots=True)
class SearchRewrite:
    """A small model that turns the conversation into 1-3 queries, or says no search is needed."""

    pool: str
    model: str
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class WebSearch:
    enabled: str = "auto"  # auto | always | off
    engines: tuple[SearchEngine, ...] = ()
    max_results: int = 5  # results injected at search_context_size medium (low: half, high: twice)
    timeout: float = 3.0  # per engine call, unless the engine sets its own
    rewrite: SearchRewrite | None = None
    citations: str = "annotations"  # annotations | references | both
    failure_policy: str = "open"  # every engine failed: open (answer without search) | closed (503)
    template: str | None = None  # None: the built-in English template
    time_zone: str | None = None  # IANA name; {date} then also shows local time


@dataclass(frozen=True, slots=True)
class Rule:
    models: tuple[str, ...]
    backends: tuple[Backend, ...]
    fallbacks: tuple[Backend, ...] = ()
    retry: Retry = field(default_factory=Retry)
    timeouts: Timeouts | None = None
    # Stages (DESIGN section 7). The compiler puts the route-wide setting on every rule that does not set its own.
    guardrails: Guardrails | None = None
    prompt_decorator: PromptDecorator | None = None
    cache: Cache | None = None
    web_search: WebSearch | None = None


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
    """One budget per window: exactly one of tokens, requests or usd (US dollars, priced by the serving
    pool's `pricing`; the limiter counts it in integer micro-dollars)."""

    window: float
    tokens: int | None = None
    requests: int | None = None
    count: str = "total"  # which tokens a token limit counts: total | input | output
    usd: float | None = None

    @property
    def amount(self) -> int:
        """The budget in the limiter's integer units: tokens, requests or micro-dollars."""
        if self.usd is not None:
            return max(1, round(self.usd * USD_UNITS))
        value = self.tokens if self.tokens is not None else self.requests
        assert value is not None
        return value


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

    @property
    def has_usd(self) -> bool:
        """Whether any of its limits (overrides included) is a money budget, which needs prices."""
        return any(lim.usd is not None for lim in (*self.limits, *(x for o in self.overrides for x in o.limits)))


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
    """Secret values by id: provider keys and the keys stages use (search engines). Carries the hash of the
    config it belongs to."""

    version: int = SCHEMA_VERSION
    hash: str = ""
    keys: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # never print key values
        return f"SecretsConfig(version={self.version}, hash={self.hash!r}, keys=<{len(self.keys)} redacted>)"
