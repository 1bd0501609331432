"""The storage seams: CacheStore (memory and SQLite behind the same tests) and BucketStore,
and the policies (PersistentCache, RateLimiter) over stores of the caller's choice."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tooloo_cli.phase6.support import ManualClock
from tooloo_cli.resilience import (
    BucketState,
    BucketStore,
    CacheStore,
    Encoded,
    MemoryBucketStore,
    MemoryCacheStore,
    PersistentCache,
    RateLimiter,
    SQLiteCacheStore,
    StoreStats,
    bucket_key,
)

NOW = 1_700_000_000.0
HELLO = Encoded(b'{"text":"Hello!"}', 0)
OTHER = Encoded(b"[1,2]", 0)


# -- CacheStore: the protocol, for every implementation --------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CacheStore[Encoded]]:
    made: CacheStore[Encoded] = MemoryCacheStore(100) if request.param == "memory" else SQLiteCacheStore(
        tmp_path / "store.db")
    yield made
    made.close()


def test_every_cache_store_is_a_cache_store(store: CacheStore[Encoded]) -> None:
    assert isinstance(store, CacheStore)


def test_an_entry_round_trips_with_its_expiry(store: CacheStore[Encoded]) -> None:
    store.set("k", HELLO, NOW + 10)
    assert store.get("k") == (HELLO, NOW + 10)
    assert store.get("missing") is None


def test_set_replaces_the_entry_and_its_expiry(store: CacheStore[Encoded]) -> None:
    store.set("k", HELLO, NOW + 10)
    store.set("k", OTHER, NOW + 20)
    assert store.get("k") == (OTHER, NOW + 20)
    assert store.stats().items == 1


def test_an_expired_entry_is_handed_back_for_the_caller_to_judge(store: CacheStore[Encoded]) -> None:
    store.set("old", HELLO, NOW - 1)
    assert store.get("old") == (HELLO, NOW - 1)


def test_delete_reports_whether_the_key_was_there(store: CacheStore[Encoded]) -> None:
    store.set("k", HELLO, NOW + 10)
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k") is None


def test_clear_removes_everything(store: CacheStore[Encoded]) -> None:
    for n in range(5):
        store.set(f"k{n}", HELLO, NOW + 10)
    store.clear()
    assert store.stats().items == 0 and all(store.get(f"k{n}") is None for n in range(5))


def test_cleanup_removes_exactly_the_expired_entries_and_names_them(store: CacheStore[Encoded]) -> None:
    store.set("gone", HELLO, NOW - 5)
    store.set("at-now", HELLO, NOW)  # expiring at `now` is expired
    store.set("live", OTHER, NOW + 5)
    assert sorted(store.cleanup(NOW)) == ["at-now", "gone"]
    assert store.cleanup(NOW) == []
    assert store.get("live") == (OTHER, NOW + 5) and store.stats().items == 1


def test_stats_count_the_items(store: CacheStore[Encoded]) -> None:
    assert store.stats().items == 0
    store.set("a", HELLO, NOW + 1)
    store.set("b", HELLO, NOW + 1)
    stats = store.stats()
    assert isinstance(stats, StoreStats) and stats.items == 2 and stats.error is None and stats.errors == 0


def test_close_twice_is_harmless(store: CacheStore[Encoded]) -> None:
    store.set("k", HELLO, NOW + 1)
    store.close()
    store.close()


@settings(max_examples=40, deadline=None)
@given(operations=st.lists(st.tuples(st.sampled_from(["set", "delete", "get", "cleanup"]),
                                     st.sampled_from(["a", "b", "c"]), st.integers(-5, 5)), max_size=30))
def test_property_memory_and_sqlite_stores_answer_alike(operations: list[tuple[str, str, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        memory, disk = MemoryCacheStore(100), SQLiteCacheStore(Path(tmp) / "p.db")
        for op, key, offset in operations:
            answers = []
            for one in (memory, disk):
                if op == "set":
                    answers.append(one.set(key, Encoded(key.encode(), offset & 1), NOW + offset))
                elif op == "delete":
                    answers.append(one.delete(key))
                elif op == "get":
                    answers.append(one.get(key))
                else:
                    answers.append(sorted(one.cleanup(NOW + offset)))
            assert answers[0] == answers[1], (op, key, offset)
            assert memory.stats().items == disk.stats().items
        disk.close()


# -- MemoryCacheStore -----------------------------------------------------------------------


def test_memory_store_is_a_bounded_lru_and_counts_evictions() -> None:
    store = MemoryCacheStore(2)
    store.set("a", 1, NOW)
    store.set("b", 2, NOW)
    assert store.get("a") == (1, NOW)  # a is now more recent than b
    store.set("c", 3, NOW)
    assert store.get("b") is None and list(store.entries) == ["a", "c"]
    assert store.stats() == StoreStats(items=2, evictions=1)


def test_memory_store_keeps_any_value_as_is() -> None:
    value = {"list": [1, 2]}
    store = MemoryCacheStore()
    store.set("k", value, NOW)
    found = store.get("k")
    assert found is not None and found[0] is value


def test_memory_store_rejects_an_empty_bound() -> None:
    with pytest.raises(ValueError):
        MemoryCacheStore(0)


# -- SQLiteCacheStore -----------------------------------------------------------------------


def test_sqlite_store_survives_a_reopen_and_its_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "store.db"
    store = SQLiteCacheStore(path)
    store.set("k", HELLO, NOW + 10)
    store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = SQLiteCacheStore(path)
    assert again.get("k") == (HELLO, NOW + 10)
    stats = again.stats()
    assert stats.persistent and stats.bytes > 0 and stats.recoveries == 0
    again.close()


def test_sqlite_store_moves_a_corrupt_file_aside_and_counts_the_recovery(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"no database at all " * 200)
    store = SQLiteCacheStore(path)
    stats = store.stats()
    assert stats.persistent and stats.recoveries == 1 and stats.items == 0
    assert [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    store.close()


def test_sqlite_store_in_an_unusable_place_answers_empty_and_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = SQLiteCacheStore(blocker / "store.db", retry_after=60)  # must not raise
    store.set("k", HELLO, NOW + 10)
    assert store.get("k") is None and store.delete("k") is False and store.cleanup(NOW) == []
    stats = store.stats()
    assert not stats.persistent and stats.error and stats.errors >= 1 and stats.items == 0


def test_sqlite_store_hands_back_a_row_with_a_foreign_expiry_as_expired(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    SQLiteCacheStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO cache VALUES ('k', x'00', 'tomorrow', 0)")
    store = SQLiteCacheStore(path)
    found = store.get("k")
    assert found is not None and found[1] == float("-inf")
    store.close()


# -- PersistentCache over a store -----------------------------------------------------------


class DictStore(MemoryCacheStore):
    """A stand-in for a shared store (Redis): the memory store, unbounded, calling itself persistent."""

    def __init__(self) -> None:
        super().__init__(max_items=1_000_000)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def stats(self) -> StoreStats:
        return StoreStats(items=len(self.entries), bytes=123, persistent=True)


def test_a_cache_over_a_store_of_its_own_serves_evicted_entries_from_it() -> None:
    shared, clock = DictStore(), ManualClock(NOW)
    with PersistentCache(store=shared, ttl=10, max_memory_items=1, clock=clock) as cache:
        cache.set("a", {"v": 1})
        cache.set("b", [2])  # a is now in the shared store only, encoded
        assert shared.entries["a"] == (Encoded(b'{"v":1}', 0), NOW + 10)
        assert cache.get("a") == {"v": 1}
        stats = cache.stats()
        assert stats["diskHits"] == 1 and stats["diskItems"] == 2 and stats["diskBytes"] == 123
        assert stats["persistent"] is True and cache.path is None and cache.store is shared
        clock.advance(10)
        assert cache.cleanup() == 2 and shared.entries == {}
    assert shared.closed


def test_an_entry_a_shared_store_cannot_decode_is_dropped_and_counted() -> None:
    shared = DictStore()
    shared.set("bad", Encoded(b"\x78\x9c not zlib", 1), NOW + 10)
    shared.set("odd", "not even a pair", NOW + 10)
    cache = PersistentCache(store=shared, clock=ManualClock(NOW))
    assert cache.get("bad", "default") == "default" and cache.get("odd") is None
    assert cache.stats()["undecodable"] == 2 and shared.entries == {}


def test_a_cache_at_a_path_is_a_cache_over_a_sqlite_store_there(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    with PersistentCache(tmp_path / "c.db", clock=clock) as by_path:
        by_path.set("k", "v")
        assert isinstance(by_path.store, SQLiteCacheStore) and by_path.path == tmp_path / "c.db"
    with PersistentCache(store=SQLiteCacheStore(tmp_path / "c.db"), clock=clock) as by_store:
        assert by_store.get("k") == "v" and by_store.path == tmp_path / "c.db"


def test_a_memory_store_as_the_shared_layer_is_not_persistent() -> None:
    cache = PersistentCache(store=MemoryCacheStore(10), max_memory_items=1, clock=ManualClock(NOW))
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1
    assert cache.stats()["persistent"] is False and cache.stats()["diskItems"] == 2


@pytest.mark.parametrize("kwargs", [{"retry_after": 1.0}, {}])
def test_a_store_and_a_path_or_its_retry_are_not_both_given(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="store"):
        PersistentCache(None if kwargs else tmp_path / "c.db", store=DictStore(), **kwargs)


def test_a_cache_without_path_or_store_keeps_memory_only() -> None:
    cache = PersistentCache(max_memory_items=2, clock=ManualClock(NOW))
    cache.set("k", 1)
    assert cache.store is None and cache.get("k") == 1 and cache.stats()["persistent"] is False


# -- BucketStore ------------------------------------------------------------------------------


def test_memory_bucket_store_is_a_bucket_store() -> None:
    assert isinstance(MemoryBucketStore(), BucketStore)


def test_take_answers_the_tokens_available_and_takes_only_what_fits() -> None:
    store = MemoryBucketStore()
    assert store.take("a", 3, 0.0, 5, 1.0) == 5.0  # a new bucket is full: 3 taken, 2 left
    assert store.take("a", 3, 0.0, 5, 1.0) == 2.0  # short by one: nothing taken, a denial
    assert store.take("a", 2, 0.0, 5, 1.0) == 2.0  # taken: empty
    assert store.take("a", 1, 0.5, 5, 1.0) == 0.5  # half a token refilled: another denial
    assert store.busiest(1, 0.5, 5, 1.0) == [BucketState("a", 0.5, 2)]


def test_take_refills_up_to_capacity_only() -> None:
    store = MemoryBucketStore()
    store.take("a", 5, 0.0, 5, 2.0)
    assert store.take("a", 1, 1000.0, 5, 2.0) == 5


def test_take_with_a_debt_allowance_goes_into_debt_and_give_back_repays() -> None:
    store = MemoryBucketStore()
    store.take("a", 2, 0.0, 2, 1.0)
    assert store.take("a", 1, 0.0, 2, 1.0, max_debt=1.0) == 0.0  # taken: in debt by one
    assert store.take("a", 1, 0.0, 2, 1.0, max_debt=1.0) == -1.0  # two deep would be too deep: not taken
    assert store.busiest(1, 0.0, 2, 1.0) == [BucketState("a", -1.0, 1)]
    store.give_back("a", 1, 2)
    store.give_back("a", 5, 2)  # never beyond capacity
    store.give_back("never-seen", 1, 2)
    assert store.busiest(1, 0.0, 2, 1.0)[0].tokens == 2.0


def test_forget_drops_one_bucket_or_all() -> None:
    store = MemoryBucketStore()
    for client in "abc":
        store.take(client, 1, 0.0, 5, 1.0)
    store.forget("a")
    store.forget("never-seen")
    assert len(store) == 2
    store.forget()
    assert len(store) == 0


def test_busiest_orders_by_denials_then_fewest_tokens() -> None:
    store = MemoryBucketStore()
    store.take("calm", 1, 0.0, 5, 1.0)
    store.take("empty", 5, 0.0, 5, 1.0)
    for _ in range(2):
        store.take("denied", 5, 0.0, 5, 1.0)
    assert [b.client for b in store.busiest(10, 0.0, 5, 1.0)] == ["denied", "empty", "calm"]
    assert store.busiest(0, 0.0, 5, 1.0) == []


def test_the_store_keeps_its_bound_and_counts_evictions() -> None:
    store = MemoryBucketStore(max_clients=10)
    for n in range(25):
        store.take(f"c{n}", 1, float(n), 5, 1.0)
        assert len(store) <= 10
    assert store.evictions + len(store) == 25


def test_a_long_client_id_is_kept_as_its_digest() -> None:
    store = MemoryBucketStore()
    long_id = "x" * 10_000
    store.take(long_id, 1, 0.0, 2, 0.001)
    assert store.take(long_id, 1, 0.0, 2, 0.001) == 1.0  # the same bucket
    assert [b.client for b in store.busiest(5, 0.0, 2, 0.001)] == [bucket_key(long_id)]
    assert len(bucket_key(long_id)) <= 64 and bucket_key("10.0.0.1") == "10.0.0.1"
    store.forget(long_id)
    assert len(store) == 0


def test_memory_bucket_store_rejects_an_empty_bound() -> None:
    with pytest.raises(ValueError):
        MemoryBucketStore(0)


# -- RateLimiter over a store ---------------------------------------------------------------


class Delegating:
    """A store of another type than MemoryBucketStore, as a Redis store would be: every request
    goes through the protocol's `take`, never the limiter's inlined fast path."""

    def __init__(self, max_clients: int = 10_000) -> None:
        self.inner = MemoryBucketStore(max_clients)
        self.takes = 0

    @property
    def max_clients(self) -> int:
        return self.inner.max_clients

    @property
    def evictions(self) -> int:
        return self.inner.evictions

    @property
    def overflowed(self) -> int:
        return self.inner.overflowed

    def take(self, *args: Any) -> float:
        self.takes += 1
        return self.inner.take(*args)

    def give_back(self, client: str, tokens: int, capacity: int) -> None:
        self.inner.give_back(client, tokens, capacity)

    def forget(self, client: str | None = None) -> None:
        self.inner.forget(client)

    def busiest(self, top: int, now: float, capacity: int, refill_rate: float) -> list[BucketState]:
        return self.inner.busiest(top, now, capacity, refill_rate)

    def __len__(self) -> int:
        return len(self.inner)


def test_a_limiter_over_another_store_goes_through_take_for_every_request() -> None:
    store = Delegating(max_clients=3)
    limiter = RateLimiter(2, 1.0, store=store, clock=ManualClock(0.0))
    assert [limiter.try_acquire("a").allowed for _ in range(3)] == [True, True, False]
    assert store.takes == 3 and limiter.store is store and limiter.max_clients == 3
    assert limiter.stats()["maxClients"] == 3 and limiter.stats()["buckets"]["a"]["denied"] == 1


def test_the_bound_of_a_given_store_is_the_stores() -> None:
    with pytest.raises(ValueError, match="store"):
        RateLimiter(5, 1.0, store=MemoryBucketStore(), max_clients=10)
    assert RateLimiter(5, 1.0, max_clients=7).store.max_clients == 7
    assert RateLimiter(5, 1.0).max_clients == 10_000


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 10),
    rate=st.floats(0.1, 20.0, allow_nan=False),
    max_clients=st.integers(1, 6),
    ops=st.lists(st.tuples(st.floats(0.0, 2.0, allow_nan=False), st.integers(0, 8), st.integers(1, 10)),
                 max_size=60),
)
def test_property_the_inlined_fast_path_decides_as_the_store_protocol_does(
    capacity: int, rate: float, max_clients: int, ops: list[tuple[float, int, int]]
) -> None:
    fast_clock, slow_clock = ManualClock(50.0), ManualClock(50.0)
    fast = RateLimiter(capacity, rate, max_clients=max_clients, clock=fast_clock)
    slow = RateLimiter(capacity, rate, store=Delegating(max_clients), clock=slow_clock)
    for advance, client, tokens in ops:
        fast_clock.advance(advance)
        slow_clock.advance(advance)
        wanted = min(tokens, capacity)
        one, other = fast.try_acquire(f"c{client}", wanted), slow.try_acquire(f"c{client}", wanted)
        assert one[:4] == other[:4]  # exactly: both paths do the same arithmetic
        assert one.reset == pytest.approx(other.reset, abs=0.01)  # each limiter has its own epoch offset
    fast_stats, slow_stats = fast.stats(top=100), slow.stats(top=100)
    assert fast_stats["buckets"].keys() == slow_stats["buckets"].keys()
    assert fast_stats == slow_stats


def test_a_sweep_removes_what_is_due_among_the_next_keys_and_starts_over_past_the_end(tmp_path: Path) -> None:
    store = SQLiteCacheStore(tmp_path / "swept.db")
    for i in range(250):
        store.set(f"key-{i:03d}", Encoded(b"1", 0), expires=10.0 if i % 2 else 1000.0)  # odd keys expire at 10
    steps = [store.sweep(20.0, rows=100) for _ in range(4)]
    assert steps[0] == [f"key-{i:03d}" for i in range(1, 100, 2)]  # among the first 100 keys
    assert steps[1] == [f"key-{i:03d}" for i in range(101, 200, 2)]
    assert steps[2] == [f"key-{i:03d}" for i in range(201, 250, 2)]  # the last 50: past the end
    assert steps[3] == []  # from the start again: nothing left that is due
    assert store.stats().items == 125
    store.set("key-000", Encoded(b"1", 0), expires=10.0)  # behind the sweep: found once it starts over
    assert [store.sweep(20.0, rows=100) for _ in range(2)] == [[], ["key-000"]]
    store.close()
