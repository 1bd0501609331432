"""RateLimiter: token buckets per client, refilled lazily, bounded in memory."""

from __future__ import annotations

import time

import pytest

from tooloo_cli.phase6.support import ManualClock, run
from tooloo_cli.resilience import RateLimiter


def test_allows_up_to_capacity_then_denies_with_retry_after() -> None:
    limiter = RateLimiter(capacity=5, refill_rate=2, clock=ManualClock())
    decisions = [limiter.try_acquire("10.0.0.1") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    denied = decisions[-1]
    assert denied.limit == 5 and denied.retry_after == pytest.approx(0.5)
    assert denied.reset == pytest.approx(time.time() + 2.5, abs=1.0)  # epoch second when full again


def test_refills_lazily_from_the_clock() -> None:
    clock = ManualClock()
    limiter = RateLimiter(capacity=10, refill_rate=4, clock=clock)
    for _ in range(10):
        limiter.try_acquire("c")
    assert not limiter.try_acquire("c").allowed
    clock.advance(0.5)  # two tokens back
    assert [limiter.try_acquire("c").allowed for _ in range(3)] == [True, True, False]
    clock.advance(3600)  # never beyond capacity
    assert limiter.try_acquire("c").remaining == 9


def test_clients_have_separate_buckets() -> None:
    limiter = RateLimiter(capacity=2, refill_rate=1, clock=ManualClock())
    for _ in range(3):
        limiter.try_acquire("greedy")
    assert limiter.try_acquire("polite").allowed
    stats = limiter.stats()
    assert stats["deniedRequests"] == 1 and stats["allowedRequests"] == 3
    assert list(stats["buckets"])[0] == "greedy"  # the most limited client first


def test_acquire_waits_only_when_the_wait_fits_max_wait() -> None:
    async def scenario() -> tuple[bool, float, bool, float]:
        limiter = RateLimiter(capacity=1, refill_rate=20)
        limiter.try_acquire("c")
        started = time.monotonic()
        waited = await limiter.acquire("c", max_wait=0.2)  # one token arrives in 0.05 s
        waited_for = time.monotonic() - started
        started = time.monotonic()
        refused = await limiter.acquire("c", max_wait=0.001)  # 0.05 s is too long
        return waited.allowed, waited_for, refused.allowed, time.monotonic() - started

    allowed, waited_for, refused_allowed, refused_after = run(scenario())
    assert allowed and waited_for >= 0.03
    assert not refused_allowed and refused_after < waited_for  # failed at once, no queue


def test_asking_for_more_than_capacity_fails_at_once() -> None:
    limiter = RateLimiter(capacity=10, refill_rate=1)
    with pytest.raises(ValueError, match="at most 10"):
        limiter.try_acquire("c", 11)
    with pytest.raises(ValueError):
        run(limiter.acquire("c", 11, max_wait=60))


def test_memory_stays_bounded_however_many_clients_appear() -> None:
    limiter = RateLimiter(capacity=100, refill_rate=10, max_clients=1000)
    for i in range(50_000):
        limiter.try_acquire(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    stats = limiter.stats()
    assert stats["activeBuckets"] <= 1001  # max_clients, and the bucket newcomers share when it is full
    assert stats["evictions"] + stats["overflowed"] >= 49_000  # every newcomer past the bound: one or the other
    assert stats["totalRequests"] == 50_000
