"""A service's metrics: what each request records, and its GET /metrics page (Prometheus).

    requests = RequestMetrics()
    requests.observe("GET", "/api/v1/training/overview", 200, 0.0012)   # the middleware, per request
    requests.series()[("GET", "/api/v1/training/overview", "2xx")].count  # 1
    metrics_page(service)      # the text of GET /metrics (exposition.CONTENT_TYPE)

Contract:

- Requests are counted by method, route template and status class, with a duration
  histogram (LATENCY_BOUNDS) over the same labels: label values are bounded whatever
  clients send. A method outside HTTP's registered ones is `_OTHER`; a request no route
  matched has route `unmatched`; the gateway's proxied requests carry the path prefix of
  the service that owns them (`/api/v1/providers/*`). A client that leaves mid-request is
  counted as the 499 its access-log line says; a request that got no status at all is not.
- The page is rendered from the same snapshots as the observability document (the
  tracer's, the limiter's, the cache's, the breakers', the pool's, the optimizer's and
  the sections services add with `Service.extra_metrics`), so the two cannot disagree.
- GET /metrics itself is not traced, limited, logged or counted, like /health.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Scope

from tooloo_cli import __version__
from tooloo_cli.exposition import Exposition, process_samples
from tooloo_cli.resilience import (
    CacheSnapshot,
    CircuitBreaker,
    ConnectionPool,
    PersistentCache,
    QueryOptimizer,
    RateLimiter,
    Tracer,
)
from tooloo_cli.resilience.histogram import LATENCY_BOUNDS, Histogram

UNMATCHED = "unmatched"
# HTTP's registered methods; anything else is counted as _OTHER (OpenTelemetry's convention), so
# that a client inventing methods cannot invent series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_FINITE_BOUNDS = LATENCY_BOUNDS[:-1]
_STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")
BREAKER_STATES = ("closed", "open", "half_open")


# Where a pure-ASGI endpoint that answers without Starlette's router (the gateway's proxy) puts the
# route template of what it answered; Starlette's router leaves its Route in scope["route"].
ROUTE_KEY = "tooloo.route"


def matched_route(scope: Scope) -> str | None:
    """The template of the route that answered the request in `scope`, or None when none did."""
    route = scope.get("route")
    if route is not None:
        return route.path
    return scope.get(ROUTE_KEY)


def route_template(scope: Scope) -> str:
    """matched_route, or UNMATCHED: a label value for every request."""
    return matched_route(scope) or UNMATCHED


def known_method(method: str) -> str:
    """`method`, or _OTHER for one outside HTTP's registered methods (a bounded value)."""
    return method if method in KNOWN_METHODS else "_OTHER"


class RequestMetrics:
    """Requests by (method, route template, status class): per-bucket counts and the seconds they took."""

    __slots__ = ("_series",)

    def __init__(self) -> None:
        # (method, route, class) -> [count in each bucket..., total seconds]: one list, one lookup a request.
        self._series: dict[tuple[str, str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (known_method(method), route, _STATUS_CLASSES[status // 100] if 0 < status < 600 else "0xx")
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0] * (len(LATENCY_BOUNDS) + 1)
        series[bisect_left(_FINITE_BOUNDS, seconds)] += 1
        series[-1] += seconds

    def series(self) -> dict[tuple[str, str, str], Histogram]:
        """Each (method, route, status class) and the histogram of its requests' durations."""
        return {key: Histogram.from_buckets([int(count) for count in series[:-1]], series[-1])
                for key, series in self._series.items()}


class Observed(Protocol):
    """What a page is rendered from: a Service (services/service.py) has all of it."""

    requests: RequestMetrics
    tracer: Tracer
    limiter: RateLimiter | None
    cache: PersistentCache | None
    breakers: dict[str, CircuitBreaker]
    pool: ConnectionPool[Any] | None
    optimizer: QueryOptimizer | None
    redis: Any  # services/shared.py's RedisLink, or None
    metric_sections: list[Callable[[Exposition], None]]


def metrics_page(service: Observed, cache: CacheSnapshot | None = None) -> str:
    """GET /metrics of `service` (see the module); `cache` is its cache's snapshot when taken already
    (the route's, by `asnapshot`, off the event loop), else it is taken here."""
    page = Exposition()
    # The service is the scrape target's (`tooloo export prometheus` labels it): a `service` label here
    # would be renamed exported_service beside it.
    page.gauge("tooloo_service_info", "The tooloo version the service runs (always 1).",
               [({"version": __version__}, 1)])
    process_samples(page)
    _requests(page, service.requests.series())
    _tracer(page, service)
    if service.limiter is not None:
        _limiter(page, service)
    if service.cache is not None:
        _cache(page, cache or service.cache.snapshot())
    if service.breakers:
        _breakers(page, service.breakers)
    if service.pool is not None:
        _pool(page, service)
    if service.optimizer is not None:
        _optimizer(page, service)
    if service.redis is not None:
        state = service.redis.state()
        page.gauge("tooloo_redis_shared", "1 while the shared state is kept in Redis, 0 while the fallback answers.",
                   [({}, state["state"] == "shared")])
        page.counter("tooloo_redis_fallback_calls_total", "Calls the fallback answered because Redis could not.",
                     [({}, state["fallbackCalls"])])
    for section in service.metric_sections:
        section(page)
    return page.text()


def _requests(page: Exposition, series: dict[tuple[str, str, str], Histogram]) -> None:
    ordered = sorted(series.items())
    named = [({"method": method, "route": route, "status_class": status}, histogram)
             for (method, route, status), histogram in ordered]
    page.counter("tooloo_http_requests_total", "HTTP requests answered, by method, route template and status class.",
                 [(labels, histogram.count) for labels, histogram in named])
    page.histogram("tooloo_http_request_duration_seconds",
                   "Time from a request's arrival to its answer's end, in seconds.", named)


def _tracer(page: Exposition, service: Observed) -> None:
    tracer = service.tracer.snapshot(traces=0)
    page.counter("tooloo_traces_total", "Requests traced (every request under /api but the monitoring paths).",
                 [({}, tracer.total)])
    page.counter("tooloo_traces_sampled_total", "Traces sampled: kept with their spans (and exported, if configured).",
                 [({}, tracer.sampled)])
    page.counter("tooloo_traces_failed_total", "Traces that ended in an error (an exception, or a 5xx answer).",
                 [({}, tracer.errors)])
    page.gauge("tooloo_traces_active", "Requests being traced now.", [({}, tracer.active)])
    page.gauge("tooloo_tracer_sampling_ratio", "The share of new traces sampled.", [({}, tracer.sampling_rate)])


def _limiter(page: Exposition, service: Observed) -> None:
    assert service.limiter is not None
    limiter = service.limiter.snapshot(top=0)
    page.counter("tooloo_rate_limit_decisions_total", "Rate-limit checks, by decision.",
                 [({"decision": "allowed"}, limiter.allowed), ({"decision": "denied"}, limiter.denied)])
    page.gauge("tooloo_rate_limit_buckets", "Clients with a bucket now.", [({}, limiter.active_buckets)])
    page.gauge("tooloo_rate_limit_max_buckets", "The most buckets kept at once.", [({}, limiter.max_clients)])
    page.counter("tooloo_rate_limit_evictions_total", "Buckets dropped to stay within the most kept.",
                 [({}, limiter.evictions)])
    page.gauge("tooloo_rate_limit_capacity", "Tokens a full bucket holds.", [({}, limiter.capacity)])
    page.gauge("tooloo_rate_limit_refill_per_second", "Tokens a bucket gains a second.", [({}, limiter.refill_rate)])


def _cache(page: Exposition, cache: CacheSnapshot) -> None:
    page.counter("tooloo_cache_hits_total", "Lookups answered, by the layer that held the entry.",
                 [({"layer": "memory"}, cache.memory_hits), ({"layer": "shared"}, cache.disk_hits)])
    page.counter("tooloo_cache_misses_total", "Lookups that found no live entry.", [({}, cache.misses)])
    page.counter("tooloo_cache_writes_total", "Entries written.", [({}, cache.writes)])
    page.counter("tooloo_cache_evictions_total", "Entries dropped from memory to stay within its bound.",
                 [({}, cache.evictions)])
    page.counter("tooloo_cache_expirations_total", "Expired entries removed.", [({}, cache.expirations)])
    page.gauge("tooloo_cache_items", "Entries held, by layer.",
               [({"layer": "memory"}, cache.memory_items), ({"layer": "shared"}, cache.disk_items)])
    page.gauge("tooloo_cache_shared_bytes", "Bytes the shared layer's files take (0 for Redis).",
               [({}, cache.disk_bytes)])
    page.gauge("tooloo_cache_persistent", "1 while the shared layer works, 0 while the cache answers from memory.",
               [({}, cache.persistent)])
    page.counter("tooloo_cache_shared_errors_total", "Failures of the shared layer (a full disk, a lost server).",
                 [({}, cache.disk_errors)])


def _breakers(page: Exposition, breakers: dict[str, CircuitBreaker]) -> None:
    snapshots = [breaker.snapshot() for breaker in breakers.values()]
    page.gauge("tooloo_breaker_state", "1 for the state each circuit breaker is in, 0 for the others.",
               [({"breaker": s.name, "state": state}, s.state == state) for s in snapshots for state in BREAKER_STATES])
    for name, help_text, field in (
        ("tooloo_breaker_calls_total", "Calls a breaker let through.", "calls"),
        ("tooloo_breaker_failures_total", "Calls that failed (timeouts included).", "failures"),
        ("tooloo_breaker_timeouts_total", "Calls that took longer than the breaker's call timeout.", "timeouts"),
        ("tooloo_breaker_rejections_total", "Calls refused at once because the breaker was open.", "rejections"),
        ("tooloo_breaker_state_changes_total", "Times a breaker changed state.", "state_changes"),
    ):
        page.counter(name, help_text, [({"breaker": s.name}, getattr(s, field)) for s in snapshots])


def _pool(page: Exposition, service: Observed) -> None:
    assert service.pool is not None
    pool = service.pool.snapshot()
    labels = {"pool": pool.name}
    page.gauge("tooloo_pool_connections", "Connections of the pool, by state.",
               [({**labels, "state": "in_use"}, pool.in_use), ({**labels, "state": "idle"}, pool.idle)])
    page.gauge("tooloo_pool_max_connections", "The most connections the pool opens.", [(labels, pool.max_size)])
    page.gauge("tooloo_pool_waiting", "Acquires waiting for a connection now.", [(labels, pool.waiting)])
    page.counter("tooloo_pool_acquires_total", "Connections handed out.", [(labels, pool.acquired)])
    page.counter("tooloo_pool_waits_total", "Acquires that had to wait for a connection.", [(labels, pool.waits)])
    page.counter("tooloo_pool_timeouts_total", "Acquires that gave up waiting.", [(labels, pool.timeouts)])
    page.histogram("tooloo_pool_acquire_wait_seconds", "Time an acquire waited for its connection, in seconds.",
                   [(labels, pool.wait)])


def _optimizer(page: Exposition, service: Observed) -> None:
    assert service.optimizer is not None
    optimizer = service.optimizer.snapshot()
    page.counter("tooloo_query_batches_total", "Batches of queued writes run.", [({}, optimizer.batches)])
    page.counter("tooloo_query_batched_rows_total", "Queued writes those batches ran.",
                 [({}, optimizer.batched_queries)])
    page.counter("tooloo_query_failed_batches_total", "Batches that failed.", [({}, optimizer.failed_batches)])
    page.gauge("tooloo_query_pending", "Writes queued, not yet run.", [({}, optimizer.pending)])
    page.counter("tooloo_singleflight_calls_total", "Reads through single flight.", [({}, optimizer.singleflight_calls)])
    page.counter("tooloo_singleflight_shared_total", "Reads that shared another's execution instead of running.",
                 [({}, optimizer.singleflight_shared)])
