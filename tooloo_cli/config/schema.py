"""The shape of `tooloo.toml`: every setting with its type, range and default.

The defaults here are the single source: `tooloo config init` writes them, and the
`tooloo.toml` at the repository root is that output. The eight built-in services are the
keys of the defaults (`BUILTIN_SERVICES`), and SPEC's table of which modules each embeds is
read from them (`SERVICE_MODULES`); a section for a module a service lacks is an error.
Any other `[services.NAME]` is a service of the user's own and must give its `command`.
Every number has a range with a finite upper bound: a value that validates must also run
(`grace_period = inf` would make a stack that cannot be stopped).

    config = Config.defaults()
    config.services["budget"].cache.ttl_seconds     # 5.0
    config.services["redis"] = command_service(["redis-server", "--port", "6390"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# Upper bounds shared by many settings: large enough for any real deployment, small enough
# that arithmetic on them (deadlines, buffer sizes) stays finite and fits the OS's types.
HOUR = 3600.0
DAY = 86_400.0
MANY = 1_000_000


def setting(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field carrying its valid range for the loader (numbers need `le`: see the docstring).

    A default of None means "not set here": the value comes from elsewhere (a per-service
    restart setting from [supervisor], a service's url from its port), and it is left out
    of the files `config init` writes.
    """
    limits = {"ge": ge, "gt": gt, "le": le, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=limits)
    return field(default=default, metadata=limits)


@dataclass
class TracerSettings:
    sampling_rate: float = setting(0.1, ge=0, le=1)
    max_traces: int = setting(50, ge=0, le=10_000)
    latency_window: int = setting(1024, ge=1, le=MANY)


@dataclass
class RateLimiterSettings:
    capacity: int = setting(100, ge=1, le=1_000_000_000)
    refill_rate: float = setting(10.0, gt=0, le=1_000_000_000)
    max_clients: int = setting(10_000, ge=1, le=10 * MANY)


@dataclass
class CacheSettings:
    file: str = setting("cache.db")
    ttl_seconds: float = setting(5.0, gt=0, le=365 * DAY)
    memory_items: int = setting(1000, ge=1, le=10 * MANY)
    compress_threshold: int = setting(1024, ge=0, le=1 << 30)


@dataclass
class PoolSettings:
    database: str = setting("data.db")
    min_size: int = setting(1, ge=0, le=1000)
    max_size: int = setting(4, ge=1, le=1000)
    acquire_timeout: float = setting(5.0, gt=0, le=HOUR)
    idle_timeout: float = setting(60.0, gt=0, le=DAY)


@dataclass
class QueryOptimizerSettings:
    batch_size: int = setting(50, ge=1, le=100_000)
    batch_window_ms: float = setting(10.0, ge=0, le=10_000)


@dataclass
class BreakerSettings:
    failure_threshold: int = setting(5, ge=1, le=100_000)
    reset_timeout: float = setting(30.0, gt=0, le=DAY)
    half_open_max_calls: int = setting(1, ge=1, le=100_000)
    call_timeout: float = setting(10.0, gt=0, le=HOUR)


@dataclass
class ProviderSettings:
    kind: str = setting("simulated", choices=("simulated", "openai"))
    latency_ms: float = setting(50.0, ge=0, le=600_000)
    failure_rate: float = setting(0.0, ge=0, le=1)
    base_url: str = setting("https://api.openai.com/v1")
    model: str = setting("gpt-4o-mini")
    api_key_env: str = setting("OPENAI_API_KEY")
    timeout: float = setting(30.0, gt=0, le=HOUR)
    max_completion_tokens: int = setting(1024, ge=1, le=MANY)
    usd_per_1k_tokens: float = setting(0.002, ge=0, le=MANY)
    daily_budget_usd: float = setting(5.0, ge=0, le=1_000_000_000)


RESTART_POLICIES = ("always", "on-failure", "no")


@dataclass
class ServiceSettings:
    """One service: one of the eight (its modules are sections) or any `command` run beside them.

    How it is reached, started, probed and restarted; `tooloo_cli.stack` turns this into the
    service's ServiceSpec. None means "from elsewhere": `url` from the host and port, `bind`
    from stack.host, the restart settings from [supervisor].
    """

    port: int = setting(3000, ge=0, le=65535)  # 0: a command service that listens on no port
    url: str | None = setting(None)  # how siblings reach it; default http://{stack.host}:{port}
    bind: str | None = setting(None)  # the address it listens on; default stack.host
    replicas: int = setting(1, ge=1, le=64)
    depends_on: list[str] = setting([])
    restart: str = setting("always", choices=RESTART_POLICIES)
    env: dict[str, str] | None = setting(None)
    env_file: str | None = setting(None)
    # Only for a service that is not one of the eight: what to run, where, and how to probe it.
    command: list[str] | None = setting(None)
    cwd: str | None = setting(None)
    health_path: str | None = setting(None)
    ready_path: str | None = setting(None)
    # Per-service overrides of the [supervisor] settings of the same names.
    grace_period: float | None = setting(None, ge=0, le=HOUR)
    startup_timeout: float | None = setting(None, gt=0, le=HOUR)
    backoff_initial: float | None = setting(None, gt=0, le=HOUR)
    backoff_max: float | None = setting(None, gt=0, le=HOUR)
    backoff_reset_after: float | None = setting(None, gt=0, le=DAY)
    crash_loop_limit: int | None = setting(None, ge=1, le=1000)
    crash_loop_window: float | None = setting(None, gt=0, le=DAY)
    tracer: TracerSettings | None = field(default_factory=TracerSettings)
    rate_limiter: RateLimiterSettings | None = None
    cache: CacheSettings | None = None
    pool: PoolSettings | None = None
    query_optimizer: QueryOptimizerSettings | None = None
    breaker: BreakerSettings | None = None
    provider: ProviderSettings | None = None

    @property
    def is_command(self) -> bool:
        """Whether this is a service of the user's own (`command`), not one of the eight."""
        return self.command is not None


# The settings a service may override from [supervisor] (ServiceSettings fields of the same names).
SUPERVISOR_OVERRIDES = ("grace_period", "startup_timeout", "backoff_initial", "backoff_max", "backoff_reset_after",
                        "crash_loop_limit", "crash_loop_window")


def command_service(command: list[str]) -> ServiceSettings:
    """The settings of a service that runs `command`: no port, no tooloo modules until configured."""
    return ServiceSettings(port=0, command=command, tracer=None)


@dataclass
class StackSettings:
    host: str = setting("127.0.0.1")
    state_dir: str = setting(".tooloo")
    trusted_proxies: list[str] = setting([])
    max_body_bytes: int = setting(1_048_576, ge=1, le=1 << 30)
    max_header_bytes: int = setting(16_384, ge=1024, le=1 << 20)
    read_timeout: float = setting(10.0, gt=0, le=300)
    max_connections: int = setting(1024, ge=16, le=MANY)
    upstream_timeout: float = setting(5.0, gt=0, le=HOUR)
    # Redis, shared by every replica and service (empty: each process keeps its own state):
    # redis://[:password@]host:port/db, rediss://… (TLS), or unix:///path/to/redis.sock.
    redis_url: str = setting("")
    # What a limit does while Redis cannot be reached: "local" (a bucket of this process, at its share
    # of the limit: capacity and refill ÷ the service's replicas) or "deny" (429 until Redis is back).
    redis_fallback: str = setting("local", choices=("local", "deny"))
    redis_timeout: float = setting(0.05, gt=0, le=60)  # seconds, to connect and for each command
    # Where services send their sampled traces, OTLP over HTTP (protobuf): a collector's base URL
    # (http://127.0.0.1:4318; /v1/traces is added) or "" (no export, unless OTEL_EXPORTER_OTLP_ENDPOINT
    # or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set in the services' environment).
    otlp_endpoint: str = setting("")


@dataclass
class SupervisorSettings:
    grace_period: float = setting(5.0, ge=0, le=HOUR)
    startup_timeout: float = setting(15.0, gt=0, le=HOUR)
    health_interval: float = setting(2.0, ge=0.05, le=HOUR)
    liveness_failures: int = setting(3, ge=1, le=1000)
    backoff_initial: float = setting(0.1, gt=0, le=HOUR)
    backoff_max: float = setting(10.0, gt=0, le=HOUR)
    backoff_reset_after: float = setting(30.0, gt=0, le=DAY)
    crash_loop_limit: int = setting(5, ge=1, le=1000)
    crash_loop_window: float = setting(60.0, gt=0, le=DAY)
    log_max_bytes: int = setting(10 * 1024 * 1024, ge=1024, le=1 << 40)
    log_backups: int = setting(3, ge=0, le=1000)
    # A loopback port where the supervisor serves GET /metrics (Prometheus) about the processes it
    # runs; 0: none.
    metrics_port: int = setting(0, ge=0, le=65535)


@dataclass
class ObserveSettings:
    interval: float = setting(1.0, ge=0.1, le=HOUR)
    timeout: float = setting(0.5, gt=0, le=60)


def secret_variables(settings: ServiceSettings) -> tuple[str, ...]:
    """The environment variables holding secrets this service needs (the provider's API key).

    Only the service that names a secret gets it: the supervisor passes every other
    service, and keeps for itself, an environment without them.
    """
    return (settings.provider.api_key_env,) if settings.provider is not None else ()


# The OpenTelemetry variables tooloo's own services read to export their sampled traces
# (services/otlp.py): the supervisor hands them on from the command that started the stack, as it
# does the TOOLOO_* settings. The headers may hold a collector's credentials: no log shows them.
OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER",
)


def _default_services() -> dict[str, ServiceSettings]:
    return {
        "web": ServiceSettings(
            port=3000,
            tracer=TracerSettings(sampling_rate=0.10),
            rate_limiter=RateLimiterSettings(capacity=1000, refill_rate=100.0),
            breaker=BreakerSettings(),
        ),
        "training": ServiceSettings(port=3001, tracer=TracerSettings(sampling_rate=0.15)),
        "meta": ServiceSettings(port=3002, tracer=TracerSettings(sampling_rate=0.20), breaker=BreakerSettings()),
        "budget": ServiceSettings(
            port=3003,
            tracer=TracerSettings(sampling_rate=0.10),
            rate_limiter=RateLimiterSettings(capacity=100, refill_rate=10.0),
            cache=CacheSettings(file="budget-cache.db", ttl_seconds=5.0),
            pool=PoolSettings(database="budget.db"),
            # Group commit: the ledger is committed before each answer, so it must not wait a window.
            query_optimizer=QueryOptimizerSettings(batch_window_ms=0.0),
            breaker=BreakerSettings(),
            provider=ProviderSettings(),
        ),
        "coach": ServiceSettings(port=3004, tracer=TracerSettings(sampling_rate=0.10), breaker=BreakerSettings()),
        "segmentation": ServiceSettings(port=3007, tracer=TracerSettings(sampling_rate=0.15)),
        "reports": ServiceSettings(
            port=3008,
            tracer=TracerSettings(sampling_rate=0.20),
            cache=CacheSettings(file="reports-cache.db", ttl_seconds=10.0),
            breaker=BreakerSettings(),
        ),
        "capabilities": ServiceSettings(
            port=3009, tracer=TracerSettings(sampling_rate=0.10), pool=PoolSettings(database="capabilities.db")
        ),
    }


# The eight services and which optional modules each embeds (SPEC's table), read from their
# defaults: the single list of the built-in services. The tracer is in every one of them.
MODULES = ("rate_limiter", "cache", "pool", "query_optimizer", "breaker", "provider")
SERVICE_MODULES: dict[str, tuple[str, ...]] = {
    name: tuple(module for module in MODULES if getattr(settings, module) is not None)
    for name, settings in _default_services().items()
}
BUILTIN_SERVICES: tuple[str, ...] = tuple(SERVICE_MODULES)


@dataclass
class Config:
    """The whole stack: shared settings, the supervisor, observe, the eight services and any others."""

    stack: StackSettings = field(default_factory=StackSettings)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    observe: ObserveSettings = field(default_factory=ObserveSettings)
    services: dict[str, ServiceSettings] = field(default_factory=_default_services)

    @classmethod
    def defaults(cls) -> Config:
        return cls()
