"""Error Handling: failures are fast, clear, counted, and lose nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tooloo_cli.phase6.support import ManualClock, run
from tooloo_cli.resilience import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    ConnectionPool,
    PersistentCache,
    PoolClosedError,
    QueryOptimizer,
)


def test_an_open_breaker_rejects_without_calling_and_recovers_after_a_probe() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("training", failure_threshold=2, reset_timeout=10, clock=clock)
    calls = 0

    async def flaky(ok: bool) -> str:
        nonlocal calls
        calls += 1
        if not ok:
            raise ConnectionError("refused")
        return "ok"

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await breaker.call(flaky, False)
        with pytest.raises(CircuitOpenError):
            await breaker.call(flaky, True)
        assert calls == 2
        clock.advance(10)
        assert breaker.state == "half_open"
        assert await breaker.call(flaky, True) == "ok"

    run(scenario())
    status = breaker.status()
    assert status["status"] == "closed" and status["rejectedCount"] == 1 and status["failureCount"] == 2
    assert status["lastFailureTime"].endswith("Z")
    assert [t["to"] for t in status["transitions"]] == ["open", "half_open", "closed"]


def test_a_slow_call_times_out_and_counts_as_a_failure() -> None:
    breaker = CircuitBreaker("provider", failure_threshold=5, call_timeout=0.02)

    async def slow() -> None:
        await asyncio.sleep(1)

    with pytest.raises(CallTimeoutError, match="provider"):
        run(breaker.call(slow))
    assert breaker.status()["failureCount"] == 1 and breaker.status()["timeoutCount"] == 1


def test_closing_a_pool_fails_its_waiters_clearly() -> None:
    async def scenario() -> BaseException:
        pool = ConnectionPool(object, min_size=0, max_size=1)
        async with pool.acquire():
            waiter = asyncio.create_task(pool.acquire(timeout=5).__aenter__())
            await asyncio.sleep(0.01)
            await pool.close()
            with pytest.raises(PoolClosedError) as caught:
                await waiter
        return caught.value

    assert "closed" in str(run(scenario()))


def test_a_failed_batch_reaches_every_caller() -> None:
    class Failing:
        async def run_batch(self, query: str, params: list) -> None:
            raise RuntimeError("disk full")

    async def scenario() -> list[BaseException | None]:
        optimizer = QueryOptimizer(Failing(), batch_size=3)
        return await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (i,)) for i in range(3)),
                                    return_exceptions=True)

    outcomes = run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)


def test_an_unusable_cache_location_degrades_to_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING):
        with PersistentCache(blocker / "cache.db", ttl=5) as cache:
            cache.set("k", "v")
            assert cache.get("k") == "v"
            assert cache.stats()["persistent"] is False
    assert "memory only" in caplog.text
