"""The six Phase 6 resilience modules, hand-written for speed: they sit on every request's path.

    from tooloo_cli.resilience import PersistentCache, RateLimiter, ResilienceError, Tracer

    limiter = RateLimiter(100, 10.0)                        # a policy over a MemoryBucketStore
    cache = PersistentCache(".tooloo/cache.db", ttl=5.0)    # a policy over a SQLiteCacheStore
    limiter.snapshot().allowed                              # a frozen LimiterSnapshot
    limiter.stats()                                         # the same figures as JSON-ready numbers

A limiter or a cache is a policy; where its state lives is a store behind a small
protocol (BucketStore, CacheStore), so a shared store can replace the in-process one.
Each module has a `snapshot()` (a frozen dataclass of counters, gauges and, for the
tracer and the pool, a latency Histogram) and a `stats()` (or `status()`) rendered from
it. Every error a module raises on its own account is a ResilienceError. This package
imports nothing of the rest of the project.
"""

from tooloo_cli.resilience.cache import (
    CacheSnapshot,
    CacheStore,
    Encoded,
    MemoryCacheStore,
    PersistentCache,
    SharedCacheStore,
    SQLiteCacheStore,
    StoreStats,
)
from tooloo_cli.resilience.circuit_breaker import BreakerSnapshot, CallTimeoutError, CircuitBreaker, CircuitOpenError
from tooloo_cli.resilience.errors import ResilienceError
from tooloo_cli.resilience.histogram import LATENCY_BOUNDS, Histogram, LatencyBuckets
from tooloo_cli.resilience.pool import (
    ConnectionPool,
    PoolClosedError,
    PoolError,
    PoolSnapshot,
    PoolTimeoutError,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)
from tooloo_cli.resilience.query_optimizer import OptimizerSnapshot, QueryOptimizer, SQLiteBatchExecutor, normalize
from tooloo_cli.resilience.rate_limiter import (
    BucketState,
    BucketStore,
    Decision,
    LimiterSnapshot,
    MemoryBucketStore,
    RateLimiter,
    SharedBucketStore,
    bucket_key,
)
from tooloo_cli.resilience.singleflight import SingleFlight
from tooloo_cli.resilience.sqlite_files import CorruptDatabaseError, integrity_problem, move_aside
from tooloo_cli.resilience.tracer import (
    Span,
    Trace,
    TraceContext,
    Tracer,
    TracerSnapshot,
    format_traceparent,
    parse_traceparent,
)

__all__ = [
    "LATENCY_BOUNDS",
    "BreakerSnapshot",
    "BucketState",
    "BucketStore",
    "CacheSnapshot",
    "CacheStore",
    "CallTimeoutError",
    "CircuitBreaker",
    "CircuitOpenError",
    "ConnectionPool",
    "CorruptDatabaseError",
    "Decision",
    "Encoded",
    "Histogram",
    "LatencyBuckets",
    "LimiterSnapshot",
    "MemoryBucketStore",
    "MemoryCacheStore",
    "OptimizerSnapshot",
    "PersistentCache",
    "PoolClosedError",
    "PoolError",
    "PoolSnapshot",
    "PoolTimeoutError",
    "QueryOptimizer",
    "RateLimiter",
    "SharedBucketStore",
    "SharedCacheStore",
    "ResilienceError",
    "SQLiteBatchExecutor",
    "SQLiteCacheStore",
    "SingleFlight",
    "Span",
    "StoreStats",
    "Trace",
    "TraceContext",
    "Tracer",
    "TracerSnapshot",
    "bucket_key",
    "format_traceparent",
    "integrity_problem",
    "move_aside",
    "normalize",
    "parse_traceparent",
    "sqlite_close",
    "sqlite_connector",
    "sqlite_is_healthy",
]
