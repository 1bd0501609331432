"""Cross-Module Integration: the modules working together as the services use them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tooloo_cli.phase6.support import run
from tooloo_cli.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ConnectionPool,
    PersistentCache,
    QueryOptimizer,
    RateLimiter,
    SQLiteBatchExecutor,
    Tracer,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)


class BurstHandler:
    """The budget service's burst path in miniature: limit, cache, singleflight, breaker, trace."""

    def __init__(self, cache_path: Path, provider_delay: float = 0.01) -> None:
        self.limiter = RateLimiter(capacity=100, refill_rate=10)
        self.cache = PersistentCache(cache_path, ttl=5)
        self.tracer = Tracer("budget", sampling_rate=1.0)
        self.breaker = CircuitBreaker("provider", failure_threshold=2, reset_timeout=30, call_timeout=1)
        self.optimizer = QueryOptimizer(self)  # type: ignore[arg-type]
        self.provider_calls = 0
        self.provider_fails = False
        self.provider_delay = provider_delay

    async def run_batch(self, query: str, params: list) -> None:  # never used: no writes here
        raise AssertionError

    async def provider(self, prompt: str) -> str:
        self.provider_calls += 1
        await asyncio.sleep(self.provider_delay)
        if self.provider_fails:
            raise ConnectionError("provider unreachable")
        return f"echo: {prompt}"

    async def burst(self, client: str, prompt: str) -> dict[str, Any]:
        with self.tracer.trace("POST /api/v1/providers/burst") as trace:
            if not self.limiter.try_acquire(client).allowed:
                return {"ok": False, "status": 429}
            with self.tracer.span("cache-lookup") as span:
                cached = self.cache.get(prompt)
                span.set("hit", cached is not None)
            if cached is not None:
                return {"ok": True, "cached": True, "text": cached, "traceId": trace.trace_id}
            with self.tracer.span("provider"):
                text = await self.optimizer.singleflight(prompt, lambda: self.breaker.call(self.provider, prompt))
            self.cache.set(prompt, text)
            return {"ok": True, "cached": False, "text": text, "traceId": trace.trace_id}


def test_burst_path_limits_caches_dedupes_and_traces(tmp_path: Path) -> None:
    handler = BurstHandler(tmp_path / "cache.db")

    async def scenario() -> tuple[list[dict], dict]:
        first = await asyncio.gather(*(handler.burst("10.0.0.1", "hello") for _ in range(10)))
        second = await handler.burst("10.0.0.1", "hello")
        return [*first, second], handler.tracer.stats()

    answers, tracing = run(scenario())
    assert handler.provider_calls == 1  # ten concurrent misses shared one provider call
    assert all(answer["text"] == "echo: hello" for answer in answers)
    assert answers[-1]["cached"] is True
    names = {span["name"] for trace in tracing["spans"] for span in trace["spans"]}
    assert {"cache-lookup", "provider"} <= names
    assert handler.cache.stats()["hits"] >= 1


def test_an_open_breaker_leaves_cached_answers_available(tmp_path: Path) -> None:
    handler = BurstHandler(tmp_path / "cache.db", provider_delay=0)

    async def scenario() -> None:
        await handler.burst("c", "known")
        handler.provider_fails = True
        for prompt in ("new-1", "new-2"):
            with pytest.raises(ConnectionError):
                await handler.burst("c", prompt)
        with pytest.raises(CircuitOpenError):
            await handler.burst("c", "new-3")
        assert (await handler.burst("c", "known"))["cached"] is True

    run(scenario())
    assert handler.breaker.status()["status"] == "open"
    assert handler.tracer.stats()["errorRate"] == 3 / 5


def test_trace_context_crosses_services() -> None:
    web, budget = Tracer("web", sampling_rate=1.0), Tracer("budget", sampling_rate=0.0)
    with web.trace("GET /api/v1/budget") as incoming:
        with web.span("proxy") as proxy:
            header = web.current_traceparent()
    with budget.trace("GET /api/v1/budget", traceparent=header) as downstream:
        pass
    assert downstream.trace_id == incoming.trace_id and downstream.sampled
    (kept,) = budget.stats()["spans"]
    assert kept["spans"][0]["parentId"] == proxy.span_id


def test_ledger_writes_batch_through_the_pool_into_sqlite(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[str, float]]:
        pool = ConnectionPool(sqlite_connector(tmp_path / "ledger.db"), min_size=1, max_size=2,
                              health_check=sqlite_is_healthy, close=sqlite_close)
        await pool.open()
        async with pool.acquire() as db:
            db.execute("CREATE TABLE spend (provider TEXT, usd REAL)")
        optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=10, batch_window=0.005)
        await asyncio.gather(*(optimizer.execute("INSERT INTO spend VALUES (?, ?)", (p, 0.5))
                               for p in ["sim"] * 7 + ["openai"] * 3))
        async with pool.acquire() as db:
            totals = db.execute("SELECT provider, sum(usd) FROM spend GROUP BY provider ORDER BY provider").fetchall()
        await pool.close()
        assert optimizer.stats()["batchesExecuted"] == 1
        return totals

    assert run(scenario()) == [("openai", 1.5), ("sim", 3.5)]


def test_every_module_reports_plain_numbers(tmp_path: Path) -> None:
    handler = BurstHandler(tmp_path / "cache.db", provider_delay=0)
    run(handler.burst("c", "p"))
    document = {
        "tracer": handler.tracer.stats(),
        "rateLimiter": handler.limiter.stats(),
        "cache": handler.cache.stats(),
        "circuitBreakers": {"provider": handler.breaker.status()},
        "queryOptimizer": handler.optimizer.stats(),
    }
    json.dumps(document)  # serialisable as it is
    numeric = {
        "tracer": ["activeTraces", "totalTraces", "sampledTraces", "avgLatency", "p50Latency", "p95Latency",
                   "p99Latency", "throughput", "errorRate", "samplingRate"],
        "rateLimiter": ["rateLimit", "refillRate", "totalRequests", "allowedRequests", "deniedRequests",
                        "allowRate", "activeBuckets"],
        "cache": ["hits", "misses", "hitRate", "memoryItems", "diskItems", "diskBytes"],
    }
    for module, fields in numeric.items():
        for name in fields:
            value = document[module][name]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{module}.{name}={value!r}"
    breaker = document["circuitBreakers"]["provider"]
    assert breaker["status"] in ("closed", "open", "half_open")
    assert all(isinstance(breaker[k], int) for k in ("callCount", "failureCount", "rejectedCount"))
