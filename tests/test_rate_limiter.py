"""Edge cases and properties of the per-client token-bucket RateLimiter.

Refill is driven by an injected fake monotonic clock, so no test depends on how fast the
machine is; the only real waits are a few hundredths of a second inside `acquire`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tooloo_cli.resilience import Decision, MemoryBucketStore, RateLimiter

EPS = 1e-9


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Moves the clock forward by `seconds`."""
        assert seconds >= 0
        self.now += seconds


def make(capacity: int = 5, rate: float = 1.0, **kwargs: Any) -> tuple[RateLimiter, FakeClock]:
    """A limiter on a fresh fake clock."""
    clock = FakeClock()
    return RateLimiter(capacity, rate, clock=clock, **kwargs), clock


def drain(limiter: RateLimiter, client: str) -> None:
    """Takes every whole token `client` has, one at a time."""
    for _ in range(limiter.capacity + 1):
        if not limiter.try_acquire(client).allowed:
            return
    raise AssertionError("bucket never ran dry")


def active_clients(limiter: RateLimiter) -> set[str]:
    """The clients that currently have a bucket, seen through stats()."""
    return set(limiter.stats(top=limiter.max_clients + 1)["buckets"])


@pytest.fixture
def recorded_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Replaces asyncio.sleep with one that records the delay and only yields once."""
    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        await real_sleep(0)
        return result

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return delays


# -- construction and argument checks --------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((0, 1.0), {}),
        ((-3, 1.0), {}),
        ((5, 0), {}),
        ((5, -1.0), {}),
        ((5, 1.0), {"max_clients": 0}),
        ((5, 1.0), {"max_clients": 5, "store": MemoryBucketStore(5)}),  # the bound is the store's
    ],
)
def test_constructor_rejects_invalid_settings(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RateLimiter(*args, **kwargs)


@pytest.mark.parametrize("tokens", [0, -1, 6, 100])
def test_try_acquire_rejects_impossible_token_counts_without_touching_state(tokens: int) -> None:
    limiter, _ = make(capacity=5)
    with pytest.raises(ValueError):
        limiter.try_acquire("a", tokens)
    stats = limiter.stats()
    assert stats["totalRequests"] == 0
    assert stats["activeBuckets"] == 0


@pytest.mark.parametrize("tokens", [0, -2, 6])
def test_acquire_rejects_impossible_token_counts_at_once(tokens: int, recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=5)
    with pytest.raises(ValueError):
        asyncio.run(limiter.acquire("a", tokens, max_wait=10.0))
    assert recorded_sleeps == []
    assert limiter.stats()["totalRequests"] == 0


@pytest.mark.parametrize("max_wait", [-0.1, float("nan")])
def test_acquire_rejects_a_negative_max_wait(max_wait: float, recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=5)
    with pytest.raises(ValueError, match="max_wait"):
        asyncio.run(limiter.acquire("a", 1, max_wait=max_wait))
    assert limiter.stats()["totalRequests"] == 0


def test_request_of_exactly_capacity_is_allowed_on_a_full_bucket() -> None:
    limiter, _ = make(capacity=5)
    decision = limiter.try_acquire("a", 5)
    assert decision.allowed
    assert decision.remaining == 0


# -- draining and refilling -------------------------------------------------------------


def test_capacity_drains_one_token_per_request_then_denies() -> None:
    limiter, _ = make(capacity=3, rate=2.0)
    remaining = [limiter.try_acquire("a").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    denied = limiter.try_acquire("a")
    assert isinstance(denied, Decision)
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.limit == 3
    assert denied.retry_after == pytest.approx(0.5)


def test_allowed_decision_has_zero_retry_after_and_reports_the_limit() -> None:
    limiter, _ = make(capacity=4)
    decision = limiter.try_acquire("a")
    assert decision.allowed
    assert decision.retry_after == 0.0
    assert decision.limit == 4
    assert decision.remaining == 3


def test_frozen_clock_never_refills_and_no_timer_thread_is_started() -> None:
    threads_before = threading.active_count()
    limiter, _ = make(capacity=2, rate=1000.0)
    drain(limiter, "a")
    time.sleep(0.02)  # real time passes, the injected clock does not
    assert not limiter.try_acquire("a").allowed
    assert threading.active_count() == threads_before


def test_refill_is_lazy_and_proportional_to_elapsed_time() -> None:
    limiter, clock = make(capacity=10, rate=4.0)
    for _ in range(10):
        assert limiter.try_acquire("a").allowed
    clock.advance(0.5)  # 2 tokens
    assert limiter.try_acquire("a").allowed
    assert limiter.try_acquire("a").allowed
    assert not limiter.try_acquire("a").allowed


def test_refill_is_capped_at_capacity() -> None:
    limiter, clock = make(capacity=3, rate=5.0)
    limiter.try_acquire("a")
    clock.advance(10_000)
    decision = limiter.try_acquire("a")
    assert decision.remaining == 2
    assert limiter.stats()["buckets"]["a"]["tokens"] == pytest.approx(2.0)


def test_fractional_tokens_are_floored_in_remaining() -> None:
    limiter, clock = make(capacity=10, rate=2.0)
    limiter.try_acquire("a", 5)  # 5 left
    clock.advance(0.25)  # +0.5
    decision = limiter.try_acquire("a")  # 4.5 left
    assert decision.remaining == 4


def test_denied_request_does_not_consume_tokens() -> None:
    limiter, _ = make(capacity=5)
    limiter.try_acquire("a", 3)  # 2 left
    assert not limiter.try_acquire("a", 3).allowed
    assert not limiter.try_acquire("a", 3).allowed
    decision = limiter.try_acquire("a", 2)
    assert decision.allowed
    assert decision.remaining == 0


def test_retry_after_is_exactly_the_time_until_the_request_fits() -> None:
    limiter, clock = make(capacity=5, rate=2.0)
    limiter.try_acquire("a", 5)
    denied = limiter.try_acquire("a", 3)
    assert not denied.allowed
    assert denied.retry_after == pytest.approx(1.5)
    clock.advance(1.4)
    assert not limiter.try_acquire("a", 3).allowed
    clock.advance(0.1 + EPS)
    assert limiter.try_acquire("a", 3).allowed


def test_reset_is_the_epoch_second_the_bucket_is_full_again() -> None:
    limiter, clock = make(capacity=10, rate=2.0)
    decision = limiter.try_acquire("a", 4)  # 6 left: full again in 2 s
    assert decision.reset == pytest.approx(time.time() + 2.0, abs=1.0)
    clock.advance(100.0)  # full again; one token is refilled in 0.5 s
    decision = limiter.try_acquire("a")
    assert decision.reset == pytest.approx(time.time() + 100.5, abs=1.0)


def test_reset_of_a_denied_request_is_when_the_bucket_is_full() -> None:
    limiter, _ = make(capacity=4, rate=1.0)
    limiter.try_acquire("a", 4)
    denied = limiter.try_acquire("a")
    assert not denied.allowed
    assert denied.reset == pytest.approx(time.time() + 4.0, abs=1.0)
    assert denied.reset - denied.retry_after == pytest.approx(time.time() + 3.0, abs=1.0)


def test_clients_have_independent_buckets() -> None:
    limiter, _ = make(capacity=2)
    drain(limiter, "a")
    assert not limiter.try_acquire("a").allowed
    decision = limiter.try_acquire("b")
    assert decision.allowed
    assert decision.remaining == 1
    buckets = limiter.stats()["buckets"]
    assert buckets["a"]["tokens"] == pytest.approx(0.0)
    assert buckets["b"]["tokens"] == pytest.approx(1.0)


def test_reset_one_client_refills_only_that_client() -> None:
    limiter, _ = make(capacity=2)
    drain(limiter, "a")
    drain(limiter, "b")
    limiter.reset("a")
    limiter.reset("never-seen")  # no error
    assert limiter.try_acquire("a").allowed
    assert not limiter.try_acquire("b").allowed


def test_reset_everything_forgets_every_bucket() -> None:
    limiter, _ = make(capacity=2)
    drain(limiter, "a")
    drain(limiter, "b")
    limiter.reset()
    assert limiter.stats()["activeBuckets"] == 0
    assert limiter.try_acquire("a").allowed
    assert limiter.try_acquire("b").allowed


# -- acquire ------------------------------------------------------------------------------


def test_acquire_takes_available_tokens_without_sleeping(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=3)
    decision = asyncio.run(limiter.acquire("a", 2, max_wait=1.0))
    assert decision.allowed
    assert decision.remaining == 1
    assert decision.retry_after == 0.0
    assert recorded_sleeps == []


def test_acquire_waits_for_tokens_when_the_wait_fits_max_wait(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=2, rate=10.0)
    drain(limiter, "a")
    decision = asyncio.run(limiter.acquire("a", max_wait=0.5))
    assert decision.allowed
    assert decision.retry_after == 0.0
    assert decision.remaining == 0
    assert recorded_sleeps == [pytest.approx(0.1)]


def test_acquire_waits_in_real_time_then_succeeds() -> None:
    limiter = RateLimiter(1, 20.0)  # real monotonic clock: 1 token per 0.05 s
    assert limiter.try_acquire("a").allowed

    async def timed() -> tuple[Decision, float]:
        start = time.monotonic()
        decision = await limiter.acquire("a", max_wait=0.2)
        return decision, time.monotonic() - start

    decision, elapsed = asyncio.run(timed())
    assert decision.allowed
    assert 0.02 <= elapsed < 2.0  # it did wait, and not for long


def test_acquire_denies_at_once_when_the_wait_exceeds_max_wait(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=2, rate=1.0)
    drain(limiter, "a")
    decision = asyncio.run(limiter.acquire("a", max_wait=0.5))
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(1.0)
    assert recorded_sleeps == []
    assert limiter.stats()["deniedRequests"] == 2  # the drain's last probe and this one


def test_acquire_never_waits_with_the_default_max_wait_of_zero(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=1, rate=1000.0)
    drain(limiter, "a")
    assert not asyncio.run(limiter.acquire("a")).allowed
    assert recorded_sleeps == []


def test_acquire_max_wait_is_per_call(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=1, rate=4.0)
    drain(limiter, "a")
    assert asyncio.run(limiter.acquire("a", max_wait=1.0)).allowed
    assert recorded_sleeps == [pytest.approx(0.25)]
    assert not asyncio.run(limiter.acquire("a", max_wait=0.1)).allowed
    assert len(recorded_sleeps) == 1


def test_concurrent_acquires_reserve_tokens_and_are_served_in_order(recorded_sleeps: list[float]) -> None:
    limiter, _ = make(capacity=1, rate=10.0)
    drain(limiter, "a")

    async def both() -> list[Decision]:
        return list(await asyncio.gather(limiter.acquire("a", max_wait=1.0), limiter.acquire("a", max_wait=1.0)))

    decisions = asyncio.run(both())
    assert all(d.allowed for d in decisions)
    assert recorded_sleeps == [pytest.approx(0.1), pytest.approx(0.2)]
    # Both tokens are spoken for: the bucket is in debt until 0.3 s from now.
    denied = limiter.try_acquire("a")
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.retry_after == pytest.approx(0.3)


def test_cancelled_acquire_refunds_its_reserved_tokens() -> None:
    limiter, clock = make(capacity=2, rate=1.0)
    limiter.try_acquire("a", 2)  # empty

    async def cancel_while_waiting() -> None:
        task = asyncio.ensure_future(limiter.acquire("a", 2, max_wait=5.0))  # would sleep 2 s
        await asyncio.sleep(0.01)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_waiting())
    assert limiter.stats()["buckets"]["a"]["tokens"] == pytest.approx(0.0)
    assert limiter.stats()["allowedRequests"] == 1  # the cancelled one is not counted
    clock.advance(1.0 + EPS)
    assert limiter.try_acquire("a").allowed  # would still be in debt without the refund


# -- memory bound and eviction ------------------------------------------------------------


def test_bucket_count_stays_bounded_and_every_bucket_dropped_had_refilled() -> None:
    limiter, clock = make(capacity=1, rate=100.0, max_clients=50)  # a token back every 10 ms
    for i in range(500):
        clock.advance(0.001)
        limiter.try_acquire(f"client-{i}")
        assert limiter.stats(top=0)["activeBuckets"] <= 50  # max_clients
    stats = limiter.stats(top=0)
    assert stats["evictions"] > 400 and stats["maxClients"] == 50
    assert stats["evictions"] + stats["activeBuckets"] + stats["overflowed"] >= 500


def test_room_is_made_by_dropping_a_refilled_bucket_never_one_still_limiting() -> None:
    limiter, clock = make(capacity=5, max_clients=5)  # evicts one at a time; a token a second
    for name in "abcde":
        clock.advance(1.0)
        limiter.try_acquire(name)
    drain(limiter, "a")  # a is empty: its bucket is what limits it
    clock.advance(1.0)  # b..e have their token back: full, they say nothing a new bucket would not
    limiter.try_acquire("f")
    assert active_clients(limiter) == {"a", "c", "d", "e", "f"}
    assert limiter.stats()["evictions"] == 1
    assert limiter.try_acquire("a").allowed  # the one token a second has brought back...
    assert not limiter.try_acquire("a").allowed  # ...and no more: nobody forgot it


def test_while_every_bucket_is_still_limiting_newcomers_get_their_own_and_the_forgotten_stay_limited() -> None:
    limiter, clock = make(capacity=2, rate=0.01, max_clients=3)  # a token back every 100 s
    for name in "abc":
        drain(limiter, name)
    clock.advance(1.0)
    # No bucket has refilled: room is made from the oldest (a), but a newcomer is not shut out.
    assert [limiter.try_acquire(f"new-{n}").allowed for n in range(3)] == [True, True, True]
    assert "a" not in active_clients(limiter)
    stats = limiter.stats(top=0)
    assert stats["overflowed"] >= 1 and stats["activeBuckets"] <= 3
    # a was forgotten empty: it comes back to the 0.01 token it has earned since, not a fresh bucket.
    assert not limiter.try_acquire("a").allowed
    clock.advance(100.0)  # a whole token back
    assert limiter.try_acquire("a").allowed
    assert not limiter.try_acquire("a").allowed


def test_a_crowd_ten_times_the_table_is_allowed_about_as_a_small_one() -> None:
    """The figure `tooloo bench modules` reports at 100k clients, at 5k: a crowd larger than the
    table is limited as one that fits (never more, and not much less), in bounded memory."""

    def allowed_fraction(clients: int, max_clients: int) -> tuple[float, MemoryBucketStore]:
        clock = FakeClock(0.0)
        store = MemoryBucketStore(max_clients)
        limiter = RateLimiter(1, 0.25 / clients, store=store, clock=clock)  # a quarter of a token a round
        ids = [f"10.0.{i // 256}.{i % 256}" for i in range(clients)]
        allowed = 0
        for _ in range(6):
            for client in ids:
                clock.advance(1.0)
                allowed += limiter.try_acquire(client).allowed
        return allowed / (clients * 6), store

    fits, _ = allowed_fraction(50, 500)
    crowd, store = allowed_fraction(5_000, 500)
    assert fits == pytest.approx(2 / 6)  # the first token, and one more after four rounds
    assert 0.9 * fits <= crowd <= fits
    assert len(store) <= 500 and store.evictions >= 5_000 * 5


def test_the_memory_of_a_store_is_bounded_by_max_clients_however_many_clients_come() -> None:
    clock = FakeClock(0.0)
    store = MemoryBucketStore(200)
    limiter = RateLimiter(1, 0.001, store=store, clock=clock)
    footprints = []
    for crowd in range(4):
        for i in range(2_000):
            clock.advance(0.001)
            limiter.try_acquire(f"crowd-{crowd}-{i}")
        footprints.append(store.footprint())
    assert len(store) <= 200
    assert footprints[1] == footprints[-1]  # once the table is full and its memory made, it grows no more
    limiter.reset()
    assert store.footprint() < footprints[0] and len(store) == 0


def test_eviction_drops_up_to_a_tenth_at_once() -> None:
    limiter, clock = make(capacity=5, max_clients=20)
    for name in [f"c{i:02d}" for i in range(20)]:
        clock.advance(1.0)
        limiter.try_acquire(name)
    clock.advance(1.0)
    limiter.try_acquire("new")
    active = active_clients(limiter)
    assert len(active) == 19 and "new" in active
    assert limiter.stats()["evictions"] == 2


def test_an_evicted_client_comes_back_with_a_full_bucket_as_it_would_have_had() -> None:
    limiter, clock = make(capacity=2, max_clients=1)
    drain(limiter, "a")
    clock.advance(2.0)  # refilled
    limiter.try_acquire("b")  # evicts a: its bucket was full anyway
    clock.advance(0.001)
    decision = limiter.try_acquire("a")
    assert decision.allowed
    assert decision.remaining == 1


# -- stats --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_stats_of_a_fresh_limiter() -> None:
    limiter, _ = make(capacity=7, rate=3)
    stats = limiter.stats()
    assert stats["rateLimit"] == 7
    assert stats["refillRate"] == 3.0
    assert stats["totalRequests"] == 0
    assert stats["allowRate"] == 1.0
    assert stats["activeBuckets"] == 0
    assert stats["evictions"] == 0
    assert stats["buckets"] == {}


def test_stats_are_plain_numbers_and_count_requests() -> None:
    limiter, _ = make(capacity=2)
    for _ in range(3):
        limiter.try_acquire("a")  # 2 allowed, 1 denied
    limiter.try_acquire("b")
    stats = limiter.stats()
    for key, value in stats.items():
        if key != "buckets":
            assert _is_number(value), key
    for bucket in stats["buckets"].values():
        assert _is_number(bucket["tokens"]) and _is_number(bucket["denied"])
    assert stats["totalRequests"] == 4
    assert stats["allowedRequests"] == 3
    assert stats["deniedRequests"] == 1
    assert stats["allowRate"] == pytest.approx(0.75)
    assert stats["activeBuckets"] == 2


def test_stats_buckets_list_most_denied_clients_first_then_emptiest() -> None:
    limiter, _ = make(capacity=3)
    limiter.try_acquire("calm")
    limiter.try_acquire("emptier", 3)
    limiter.try_acquire("one-denial", 3)
    limiter.try_acquire("one-denial", 1)
    limiter.try_acquire("two-denials", 3)
    limiter.try_acquire("two-denials")
    limiter.try_acquire("two-denials")
    buckets = limiter.stats()["buckets"]
    assert list(buckets) == ["two-denials", "one-denial", "emptier", "calm"]
    assert buckets["two-denials"]["denied"] == 2
    assert buckets["calm"]["denied"] == 0
    assert list(limiter.stats(top=2)["buckets"]) == ["two-denials", "one-denial"]


def test_stats_bucket_tokens_include_refill_since_last_use() -> None:
    limiter, clock = make(capacity=10, rate=2.0)
    limiter.try_acquire("a", 10)
    clock.advance(2.0)
    assert limiter.stats()["buckets"]["a"]["tokens"] == pytest.approx(4.0)
    clock.advance(100.0)
    assert limiter.stats()["buckets"]["a"]["tokens"] == pytest.approx(10.0)


# -- properties ---------------------------------------------------------------------------

_ops = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=3.0, allow_nan=False, allow_infinity=False),
        st.integers(min_value=1, max_value=20),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=50, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=20),
    rate=st.floats(min_value=0.1, max_value=50.0, allow_nan=False),
    ops=_ops,
)
def test_property_allowed_tokens_in_any_window_never_exceed_capacity_plus_refill(
    capacity: int, rate: float, ops: list[tuple[float, int]]
) -> None:
    limiter, clock = make(capacity=capacity, rate=rate)
    granted: list[tuple[float, int]] = []
    for advance, wanted in ops:
        clock.advance(advance)
        n = min(wanted, capacity)
        decision = limiter.try_acquire("c", n)
        assert 0 <= decision.remaining <= capacity
        if decision.allowed:
            assert decision.retry_after == 0.0
            granted.append((clock.now, n))
        else:
            assert decision.retry_after > 0
    for i, (start, _) in enumerate(granted):
        total = 0
        for end, n in granted[i:]:
            total += n
            assert total <= capacity + rate * (end - start) + 1e-6
    stats = limiter.stats()
    assert 0.0 <= stats["allowRate"] <= 1.0
    assert stats["allowedRequests"] == len(granted)


@settings(max_examples=50, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=20),
    rate=st.floats(min_value=0.1, max_value=50.0, allow_nan=False),
    ops=_ops,
)
def test_property_a_denied_request_fits_exactly_after_retry_after(
    capacity: int, rate: float, ops: list[tuple[float, int]]
) -> None:
    limiter, clock = make(capacity=capacity, rate=rate)
    for advance, wanted in ops:
        clock.advance(advance)
        n = min(wanted, capacity)
        decision = limiter.try_acquire("c", n)
        if decision.allowed:
            continue
        wait = decision.retry_after
        if wait > 1e-6:
            clock.advance(wait / 2)
            assert not limiter.try_acquire("c", n).allowed
            clock.advance(wait / 2 + 1e-6)
        else:
            clock.advance(1e-6)
        assert limiter.try_acquire("c", n).allowed


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=5),
    max_clients=st.integers(min_value=1, max_value=6),
    steps=st.lists(st.tuples(st.integers(min_value=0, max_value=20), st.sampled_from([0.0, 0.01, 0.3, 2.0])),
                   max_size=120),
)
def test_property_the_limit_holds_however_many_clients_crowd_the_table(
    capacity: int, max_clients: int, steps: list[tuple[int, float]]
) -> None:
    """No client is ever allowed more than capacity + rate x the time since its first request:
    being forgotten (evicted while full, or forgotten while limited) never hands anyone a fresh allowance."""
    rate = 1.0
    limiter, clock = make(capacity=capacity, rate=rate, max_clients=max_clients)
    first_seen: dict[str, float] = {}
    allowed: dict[str, int] = {}
    for client_index, pause in steps:
        clock.advance(pause)
        client = f"c{client_index}"
        first_seen.setdefault(client, clock.now)
        if limiter.try_acquire(client).allowed:
            allowed[client] = allowed.get(client, 0) + 1
        assert allowed.get(client, 0) <= capacity + rate * (clock.now - first_seen[client]) + 1e-9
        assert limiter.stats(top=0)["activeBuckets"] <= max_clients


def test_a_long_client_id_is_kept_short_and_still_limited() -> None:
    limiter = RateLimiter(capacity=2, refill_rate=0.001, max_clients=100)
    long_id = "203.0.113.9, " + "x" * 8192
    decisions = [limiter.try_acquire(long_id).allowed for _ in range(3)]
    for number in range(50):
        limiter.try_acquire(f"{number}-" + "y" * 8192)
    assert decisions == [True, True, False]  # the same long id is the same bucket
    assert all(len(client) <= 64 for client in limiter.stats(top=100)["buckets"])
    limiter.reset(long_id)
    assert limiter.try_acquire(long_id).allowed
