"""The six Phase 6 resilience modules, hand-written for speed (see DEVELOPERS.md).

    from tooloo_cli.resilience import PersistentCache, RateLimiter, Tracer

Each module has one role and a `stats()` (or `status()`) of plain numbers.
"""

from tooloo_cli.resilience.cache import PersistentCache
from tooloo_cli.resilience.circuit_breaker import CallTimeoutError, CircuitBreaker, CircuitOpenError
from tooloo_cli.resilience.pool import (
    ConnectionPool,
    PoolClosedError,
    PoolError,
    PoolTimeoutError,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)
from tooloo_cli.resilience.query_optimizer import QueryOptimizer, SQLiteBatchExecutor, normalize
from tooloo_cli.resilience.rate_limiter import Decision, RateLimiter
from tooloo_cli.resilience.singleflight import SingleFlight
from tooloo_cli.resilience.sqlite_files import integrity_problem, move_aside
from tooloo_cli.resilience.tracer import Span, Trace, TraceContext, Tracer, format_traceparent, parse_traceparent

__all__ = [
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConnectionPool",
    "Decision",
    "PersistentCache",
    "PoolClosedError",
    "PoolError",
    "PoolTimeoutError",
    "QueryOptimizer",
    "RateLimiter",
    "SQLiteBatchExecutor",
    "SingleFlight",
    "Span",
    "Trace",
    "TraceContext",
    "Tracer",
    "format_traceparent",
    "integrity_problem",
    "move_aside",
    "normalize",
    "parse_traceparent",
    "sqlite_close",
    "sqlite_connector",
    "sqlite_is_healthy",
]
