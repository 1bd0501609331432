"""Typed snapshots: every module's stats()/status() is the rendering of its snapshot(), with the
keys the services and the observability document have always had; the latency histograms
are cumulative and their sum and count add up."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from tooloo_cli.phase6.support import ManualClock, run
from tooloo_cli.resilience import (
    LATENCY_BOUNDS,
    BreakerSnapshot,
    CacheSnapshot,
    CircuitBreaker,
    ConnectionPool,
    Histogram,
    LatencyBuckets,
    LimiterSnapshot,
    OptimizerSnapshot,
    PersistentCache,
    PoolSnapshot,
    QueryOptimizer,
    RateLimiter,
    Tracer,
    TracerSnapshot,
)
from tooloo_cli.resilience import tracer as tracer_module

LIMITER_KEYS = ["rateLimit", "refillRate", "totalRequests", "allowedRequests", "deniedRequests", "allowRate",
                "activeBuckets", "maxClients", "evictions", "overflowed", "buckets"]
CACHE_KEYS = ["hits", "misses", "hitRate", "memoryHits", "diskHits", "writes", "evictions", "expirations",
              "memoryItems", "maxMemoryItems", "diskItems", "diskBytes", "ttlSeconds", "persistent", "diskError",
              "diskErrors", "recoveries", "undecodable"]
BREAKER_KEYS = ["status", "callCount", "successCount", "failureCount", "rejectedCount", "timeoutCount",
                "consecutiveFailures", "failureThreshold", "resetTimeout", "lastFailureTime", "lastError",
                "stateChanges", "transitions"]
POOL_KEYS = ["size", "idle", "inUse", "waiting", "minSize", "maxSize", "created", "destroyed", "acquired",
             "timeouts", "healthCheckFailures", "avgWaitMs", "closed"]
OPTIMIZER_KEYS = ["queuedQueries", "pendingQueries", "batchesExecuted", "batchedQueries", "avgBatchSize",
                  "failedBatches", "batchSize", "batchWindowMs", "singleflightCalls", "singleflightShared", "inflight"]
TRACER_KEYS = ["samplingRate", "activeTraces", "totalTraces", "sampledTraces", "errorCount", "avgLatency",
               "p50Latency", "p95Latency", "p99Latency", "throughput", "errorRate", "spans"]


def assert_frozen(snapshot: Any) -> None:
    field = dataclasses.fields(snapshot)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(snapshot, field, None)


# -- Histogram ----------------------------------------------------------------------------------


def test_the_latency_bounds_are_prometheus_style_seconds_ending_in_inf() -> None:
    assert LATENCY_BOUNDS == (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)


def test_recorded_durations_fall_into_cumulative_buckets_with_sum_and_count() -> None:
    buckets = LatencyBuckets()
    for seconds in (0.0005, 0.001, 0.0011, 0.003, 0.2, 7.0, 60.0):
        buckets.observe(seconds)
    histogram = buckets.snapshot()
    by_bound = dict(histogram.buckets)
    assert by_bound[0.001] == 2  # an observation on a bound is in that bound's bucket (le)
    assert by_bound[0.0025] == 3 and by_bound[0.005] == 4 and by_bound[0.1] == 4 and by_bound[0.25] == 5
    assert by_bound[5.0] == 5 and by_bound[10.0] == 6 and by_bound[math.inf] == 7
    assert list(histogram.counts) == sorted(histogram.counts)  # cumulative: never decreasing
    assert histogram.count == 7 == histogram.counts[-1] == buckets.count
    assert histogram.sum == pytest.approx(0.0005 + 0.001 + 0.0011 + 0.003 + 0.2 + 7.0 + 60.0)
    assert histogram.mean == pytest.approx(histogram.sum / 7)
    assert_frozen(histogram)


def test_an_empty_histogram_is_all_zeros() -> None:
    histogram = LatencyBuckets().snapshot()
    assert histogram.count == 0 and histogram.sum == 0.0 and set(histogram.counts) == {0}
    assert histogram.bounds == LATENCY_BOUNDS and histogram.mean == 0.0


def test_a_histogram_made_from_per_bucket_counts_accumulates_them() -> None:
    histogram = Histogram.from_buckets([1, 0, 2], 1.5, bounds=(0.1, 1.0, math.inf))
    assert histogram.counts == (1, 1, 3) and histogram.count == 3 and histogram.sum == 1.5


@pytest.mark.parametrize("bounds, counts, count", [
    ((0.1, 1.0), (1, 2), 2),  # no +Inf
    ((0.1, math.inf), (1,), 1),  # a count missing
    ((0.1, math.inf), (1, 2), 3),  # +Inf is not the count
])
def test_an_inconsistent_histogram_is_refused(bounds: tuple[float, ...], counts: tuple[int, ...], count: int) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds, counts, 0.0, count)


# -- RateLimiter ------------------------------------------------------------------------------


def test_limiter_stats_are_the_rendering_of_its_snapshot() -> None:
    clock = ManualClock(0.0)
    limiter = RateLimiter(2, 0.001, max_clients=3, clock=clock)
    for client in ("b", "c", "a", "a", "a"):  # a is denied once
        clock.advance(0.001)
        limiter.try_acquire(client)
    clock.advance(1000.0)  # b and c have refilled; a too, but it is used again first
    for client in ("a", "d"):  # d takes the place of b, the first bucket found full
        limiter.try_acquire(client)
    snapshot = limiter.snapshot()
    assert isinstance(snapshot, LimiterSnapshot)
    assert limiter.stats() == snapshot.to_dict() and list(limiter.stats()) == LIMITER_KEYS
    assert (snapshot.allowed, snapshot.denied, snapshot.total) == (6, 1, 7)
    assert snapshot.allow_rate == pytest.approx(6 / 7)
    assert (snapshot.evictions, snapshot.active_buckets, snapshot.max_clients, snapshot.overflowed) == (1, 3, 3, 0)
    assert snapshot.capacity == 2 and snapshot.refill_rate == 0.001
    assert [b.client for b in snapshot.busiest][:1] == ["a"] and snapshot.busiest[0].denied == 1
    assert limiter.snapshot(top=1).busiest == snapshot.busiest[:1] and limiter.snapshot(top=0).busiest == ()
    assert_frozen(snapshot)


# -- PersistentCache -------------------------------------------------------------------------


@pytest.mark.parametrize("on_disk", [True, False])
def test_cache_stats_are_the_rendering_of_its_snapshot(tmp_path: Path, on_disk: bool) -> None:
    clock = ManualClock(1_700_000_000.0)
    cache = PersistentCache(tmp_path / "c.db" if on_disk else None, ttl=10, max_memory_items=1, clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)  # evicts a from memory
    cache.get("b")
    cache.get("a")
    cache.get("missing")
    clock.advance(10)
    cache.get("a")  # expired
    snapshot = cache.snapshot()
    assert isinstance(snapshot, CacheSnapshot)
    assert cache.stats() == snapshot.to_dict() and list(cache.stats()) == CACHE_KEYS
    # On disk, a comes back from the disk (evicting b) and then expires; in memory only, a is gone.
    assert snapshot.memory_hits == 1 and snapshot.writes == 2 and snapshot.expirations == (1 if on_disk else 0)
    assert snapshot.disk_hits == (1 if on_disk else 0) and snapshot.hits == snapshot.memory_hits + snapshot.disk_hits
    assert snapshot.misses == (2 if on_disk else 3) and snapshot.evictions == (2 if on_disk else 1)
    assert snapshot.hit_rate == snapshot.hits / (snapshot.hits + snapshot.misses)
    assert snapshot.memory_items == (0 if on_disk else 1) and snapshot.max_memory_items == 1
    assert snapshot.ttl_seconds == 10
    assert snapshot.persistent is on_disk and snapshot.disk_error is None
    assert snapshot.disk_items == (1 if on_disk else 0) and (snapshot.disk_bytes > 0) is on_disk
    assert (snapshot.disk_errors, snapshot.recoveries, snapshot.undecodable) == (0, 0, 0)
    assert_frozen(snapshot)
    cache.close()


# -- CircuitBreaker ----------------------------------------------------------------------------


async def _fail() -> None:
    raise ConnectionError("refused")


async def _succeed() -> str:
    return "ok"


@pytest.mark.parametrize("detail", [True, False])
def test_breaker_status_is_the_rendering_of_its_snapshot(detail: bool) -> None:
    clock = ManualClock(0.0)
    breaker = CircuitBreaker("upstream", failure_threshold=2, reset_timeout=5, call_timeout=None, clock=clock)

    async def scenario() -> None:
        await breaker.call(_succeed)
        for _ in range(3):
            with pytest.raises(Exception):
                await breaker.call(_fail)

    run(scenario())
    snapshot = breaker.snapshot()
    assert isinstance(snapshot, BreakerSnapshot)
    assert breaker.status(detail) == snapshot.to_dict(detail) and list(breaker.status(detail)) == BREAKER_KEYS
    assert (snapshot.state, snapshot.calls, snapshot.successes, snapshot.failures, snapshot.rejections) == (
        "open", 3, 1, 2, 1)
    assert snapshot.name == "upstream" and snapshot.consecutive_failures == 2 and snapshot.state_changes == 1
    assert snapshot.last_error == "ConnectionError: refused" and snapshot.last_error_kind == "ConnectionError"
    assert isinstance(snapshot.last_failure_time, float) and snapshot.transitions[0]["to"] == "open"
    assert breaker.status(detail)["lastError"] == ("ConnectionError: refused" if detail else "ConnectionError")
    clock.advance(5)
    assert breaker.snapshot().state == "half_open"  # the timeout passed: the snapshot sees it
    assert_frozen(snapshot)


# -- ConnectionPool ------------------------------------------------------------------------------


def test_pool_stats_are_the_rendering_of_its_snapshot_with_a_wait_histogram() -> None:
    clock = ManualClock(0.0)

    async def scenario() -> tuple[PoolSnapshot, dict[str, Any]]:
        pool = ConnectionPool(object, min_size=0, max_size=1, clock=clock)
        async with pool.acquire():  # no wait
            waiter = asyncio.ensure_future(pool.acquire().__aenter__())
            await asyncio.sleep(0)
            clock.advance(0.02)  # the waiter waits 20 ms
        await waiter
        snapshot = pool.snapshot()
        return snapshot, pool.stats()

    snapshot, stats = run(scenario())
    assert isinstance(snapshot, PoolSnapshot)
    assert stats == snapshot.to_dict() and list(stats) == POOL_KEYS
    assert snapshot.acquired == 2 and snapshot.waits == 1 and snapshot.in_use == 1 and snapshot.size == 1
    wait = dict(snapshot.wait.buckets)
    assert wait[0.001] == 1 and wait[0.01] == 1 and wait[0.025] == 2 and wait[math.inf] == 2
    assert snapshot.wait.count == 2 and snapshot.wait.sum == pytest.approx(0.02)
    assert snapshot.avg_wait_ms == pytest.approx(10.0) == stats["avgWaitMs"]
    assert_frozen(snapshot)


# -- QueryOptimizer ------------------------------------------------------------------------------


def test_optimizer_stats_are_the_rendering_of_its_snapshot() -> None:
    class Recorder:
        async def run_batch(self, query: str, params: list[Any]) -> None:
            await asyncio.sleep(0)

    async def scenario() -> tuple[OptimizerSnapshot, dict[str, Any], OptimizerSnapshot]:
        optimizer = QueryOptimizer(Recorder(), batch_size=2, batch_window=0.001)
        during = None

        async def shared() -> int:
            nonlocal during
            await asyncio.sleep(0)
            during = optimizer.snapshot()
            return 1

        await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(5)),
                             *(optimizer.singleflight("k", shared) for _ in range(3)))
        assert during is not None
        return optimizer.snapshot(), optimizer.stats(), during

    snapshot, stats, during = run(scenario())
    assert isinstance(snapshot, OptimizerSnapshot)
    assert stats == snapshot.to_dict() and list(stats) == OPTIMIZER_KEYS
    assert (snapshot.queued, snapshot.pending, snapshot.batches, snapshot.batched_queries) == (5, 0, 3, 5)
    assert snapshot.avg_batch_size == pytest.approx(5 / 3) and snapshot.failed_batches == 0
    assert (snapshot.singleflight_calls, snapshot.singleflight_shared, snapshot.inflight) == (3, 2, 0)
    assert during.inflight == 1 and snapshot.batch_window == 0.001 and stats["batchWindowMs"] == 1.0
    assert_frozen(snapshot)


# -- Tracer ---------------------------------------------------------------------------------------


def test_tracer_stats_are_the_rendering_of_its_snapshot_with_a_latency_histogram(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [10**12]
    monkeypatch.setattr(tracer_module, "perf_counter_ns", lambda: now[0])
    tracer = Tracer("svc", sampling_rate=1.0, max_traces=2)
    latencies_ms = [0.5, 1.0, 3.0, 20.0, 2000.0, 20_000.0]
    for n, latency in enumerate(latencies_ms):
        with tracer.trace(f"GET /{n}") as trace:
            if n == 0:
                trace.fail("bad")
            now[0] += int(latency * 1_000_000)
    snapshot = tracer.snapshot()
    assert isinstance(snapshot, TracerSnapshot)
    assert tracer.stats() == snapshot.to_dict() and list(tracer.stats()) == TRACER_KEYS
    assert (snapshot.total, snapshot.sampled, snapshot.errors, snapshot.active) == (6, 6, 1, 0)
    assert snapshot.error_rate == pytest.approx(1 / 6) and snapshot.service == "svc"
    latency = dict(snapshot.latency.buckets)
    assert latency[0.001] == 2 and latency[0.005] == 3 and latency[0.025] == 4 and latency[2.5] == 5
    assert latency[10.0] == 5 and latency[math.inf] == 6
    assert snapshot.latency.count == 6 == snapshot.total
    assert snapshot.latency.sum == pytest.approx(sum(latencies_ms) / 1000)
    assert snapshot.avg_latency_ms == pytest.approx(sum(latencies_ms) / 6)
    assert snapshot.p50_latency_ms == 3.0 and snapshot.p99_latency_ms == 20_000.0
    assert [t.name for t in snapshot.recent] == ["GET /5", "GET /4"]  # newest first, bounded by max_traces
    assert [t.name for t in tracer.snapshot(traces=1).recent] == ["GET /5"]
    assert_frozen(snapshot)


def test_the_latency_histogram_covers_every_request_not_only_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [10**12]
    monkeypatch.setattr(tracer_module, "perf_counter_ns", lambda: now[0])
    tracer = Tracer("svc", sampling_rate=0.0, latency_window=4)
    for _ in range(10):
        with tracer.trace("GET /"):
            now[0] += 2_000_000  # 2 ms
    snapshot = tracer.snapshot()
    assert snapshot.latency.count == 10 and dict(snapshot.latency.buckets)[0.0025] == 10
    assert snapshot.latency.sum == pytest.approx(0.02)
