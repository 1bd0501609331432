"""Edge cases and properties of PersistentCache (LRU memory over a SQLite file).

Every test uses real SQLite files in a temporary directory and an injected epoch clock,
so expiry is decided by the test, not by the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fill, small_filesystem
from tooloo_cli.resilience import (CorruptDatabaseError, PersistentCache, ResilienceError, SQLiteCacheStore,
                                   integrity_problem)
from tooloo_cli.resilience.cache import CHECKPOINT_EVERY, WRITE_GROUP_ROWS
from tooloo_cli.phase6.support import ManualClock

MISSING = object()
STAT_FIELDS = (
    "hits", "misses", "hitRate", "memoryHits", "diskHits", "writes",
    "evictions", "expirations", "memoryItems", "diskItems", "diskBytes",
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)  # epoch seconds, as the cache stores them


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


def open_cache(path: Path | None, clock: ManualClock, **kwargs: Any) -> PersistentCache:
    """A cache at `path` driven by `clock`."""
    return PersistentCache(path, clock=clock, **kwargs)


def rows(path: Path) -> dict[str, tuple[float, int]]:
    """The on-disk rows as {key: (expires, compressed)}, read with a separate connection."""
    with sqlite3.connect(path) as db:
        return {key: (expires, compressed) for key, expires, compressed in db.execute(
            "SELECT key, expires, compressed FROM cache"
        )}


def _is_number(value: Any) -> bool:
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, -1, -0.5])
def test_constructor_rejects_non_positive_ttl(ttl: float, db_path: Path) -> None:
    with pytest.raises(ValueError):
        PersistentCache(db_path, ttl=ttl)


def test_constructor_rejects_an_empty_memory_layer(db_path: Path) -> None:
    with pytest.raises(ValueError):
        PersistentCache(db_path, max_memory_items=0)


@pytest.mark.parametrize("ttl", [0, -5])
def test_set_rejects_non_positive_ttl_and_stores_nothing(ttl: float, db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    with pytest.raises(ValueError):
        cache.set("k", 1, ttl=ttl)
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats()["writes"] == 0
    cache.close()


@pytest.mark.parametrize("value", [object(), {1, 2}, {"nested": [b"bytes"]}, len])
@pytest.mark.parametrize("persistent", [True, False])
def test_non_json_values_raise_type_error_and_are_not_stored(
    value: Any, persistent: bool, db_path: Path, clock: ManualClock
) -> None:
    cache = open_cache(db_path if persistent else None, clock)
    with pytest.raises(TypeError):
        cache.set("k", value)
    assert cache.get("k", MISSING) is MISSING
    stats = cache.stats()
    assert stats["writes"] == 0
    assert stats["memoryItems"] == 0
    assert stats["diskItems"] == 0
    cache.close()


# -- basic operations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [{"text": "Hello!"}, [1, 2.5, "x", None, True], "plain", 42, 3.25, False, None, {"a": {"b": [{}]}}, ""],
)
def test_values_round_trip_from_memory_and_from_disk(value: Any, db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    cache.set("k", value)
    assert cache.get("k", MISSING) == value
    cache.close()
    reopened = open_cache(db_path, clock)
    assert reopened.get("k", MISSING) == value
    assert reopened.stats()["diskHits"] == 1
    reopened.close()


def test_get_of_a_missing_key_returns_the_default_and_counts_a_miss(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    assert cache.get("nope") is None
    assert cache.get("nope", "fallback") == "fallback"
    stats = cache.stats()
    assert stats["misses"] == 2
    assert stats["hits"] == 0
    assert stats["hitRate"] == 0.0
    cache.close()


def test_a_stored_none_is_a_hit_not_a_miss(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    cache.set("k", None)
    assert cache.get("k", MISSING) is None
    assert cache.stats()["hits"] == 1
    cache.close()


def test_memory_copy_is_returned_as_is(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    value = {"list": [1, 2]}
    cache.set("k", value)
    assert cache.get("k") is value
    cache.close()


def test_set_overwrites_the_value_in_both_layers(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    cache.set("k", "old")
    cache.set("k", "new")
    assert cache.get("k") == "new"
    assert cache.stats()["diskItems"] == 1
    assert cache.stats()["writes"] == 2
    cache.close()
    with open_cache(db_path, clock) as reopened:
        assert reopened.get("k") == "new"


def test_asnapshot_counts_the_file_off_the_event_loop_and_exactly(db_path: Path, clock: ManualClock) -> None:
    """What /metrics and the observability document read: the count of a large file must not hold up the
    loop (33 ms at 300k entries), and must still be exact, another process's entries included."""
    cache = open_cache(db_path, clock)
    with sqlite3.connect(db_path) as other:  # a second replica writing the same file
        other.executemany("INSERT INTO cache VALUES (?, ?, ?, 0)",
                          ((f"other-{i}", b'"x"', time.time() + 60) for i in range(60_000)))
    cache.set("own", 1)
    ticks = 0
    done = False

    async def meanwhile() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0)
            ticks += 1

    async def scrape() -> Any:
        nonlocal done
        ticker = asyncio.create_task(meanwhile())
        try:
            return await cache.asnapshot()
        finally:
            done = True
            await ticker

    snapshot = asyncio.run(scrape())
    assert snapshot.disk_items == 60_001 == cache.snapshot().disk_items
    assert snapshot.persistent and snapshot.writes == 1 and snapshot.memory_items == 1
    assert ticks > 1  # the loop ran other tasks while the file was counted
    assert cache.shared_state().persistent and cache.shared_state().items == 0  # /ready's check: nothing counted
    cache.close()


def test_delete_removes_from_both_layers_and_reports_presence(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.delete("k") is False
    assert cache.delete("never") is False
    assert cache.get("k", MISSING) is MISSING
    assert cache.stats()["diskItems"] == 0
    cache.close()
    with open_cache(db_path, clock) as reopened:
        assert reopened.get("k", MISSING) is MISSING


def test_delete_of_a_key_only_on_disk_reports_true(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=1)
    cache.set("a", 1)
    cache.set("b", 2)  # a is now on disk only
    assert cache.delete("a") is True
    assert cache.get("a", MISSING) is MISSING
    cache.close()


def test_clear_empties_both_layers(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=2)
    for i in range(5):
        cache.set(f"k{i}", i)
    cache.clear()
    stats = cache.stats()
    assert stats["memoryItems"] == 0
    assert stats["diskItems"] == 0
    assert all(cache.get(f"k{i}", MISSING) is MISSING for i in range(5))
    cache.close()
    with open_cache(db_path, clock) as reopened:
        assert reopened.stats()["diskItems"] == 0


# -- expiry -------------------------------------------------------------------------------


def test_entries_expire_after_the_default_ttl(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0)
    cache.set("k", "v")
    clock.advance(9.5)
    assert cache.get("k") == "v"
    clock.advance(0.5)  # exactly at the expiry time: gone
    assert cache.get("k", MISSING) is MISSING
    stats = cache.stats()
    assert stats["expirations"] == 1
    assert stats["diskItems"] == 0  # the expired row is removed, not just hidden
    assert stats["memoryItems"] == 0
    cache.close()


def test_per_entry_ttl_overrides_the_default(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=100.0)
    cache.set("short", 1, ttl=1.0)
    cache.set("long", 2, ttl=1000.0)
    cache.set("default", 3)
    clock.advance(50.0)
    assert cache.get("short", MISSING) is MISSING
    assert cache.get("default") == 3
    clock.advance(100.0)
    assert cache.get("default", MISSING) is MISSING
    assert cache.get("long") == 2
    cache.close()


def test_set_again_renews_the_expiry(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0)
    cache.set("k", 1)
    clock.advance(8.0)
    cache.set("k", 2)
    clock.advance(8.0)
    assert cache.get("k") == 2
    cache.close()


def test_expired_entry_that_was_evicted_from_memory_is_a_miss_from_disk(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=5.0, max_memory_items=1)
    cache.set("a", 1)
    cache.set("b", 2)  # a evicted from memory, still on disk
    clock.advance(5.0)
    assert cache.get("a", MISSING) is MISSING
    stats = cache.stats()
    assert stats["diskHits"] == 0
    assert stats["expirations"] == 1
    assert stats["diskItems"] == 1  # only b, not yet looked at
    cache.close()


def test_cleanup_removes_expired_entries_from_both_layers_and_counts_them(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0, max_memory_items=2)
    for i in range(4):
        cache.set(f"old{i}", i)  # two in memory and on disk, two on disk only
    cache.set("fresh", "x", ttl=100.0)
    clock.advance(10.0)
    assert cache.cleanup() == 4
    stats = cache.stats()
    assert stats["diskItems"] == 1
    assert stats["memoryItems"] == 1
    assert stats["expirations"] == 4
    assert cache.get("fresh") == "x"
    assert cache.cleanup() == 0
    cache.close()


def test_the_periodic_sweep_removes_expired_entries_in_bounded_steps_and_reaches_them_all(
        db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0, max_memory_items=5, cleanup_every=10)
    for i in range(200):
        cache.set(f"old-{i:03d}", i)
    clock.advance(10.0)
    on_disk = [len(rows(db_path))]
    for i in range(300):  # a sweep every ten writes, each over the next 20 keys of the file
        cache.set(f"new-{i:03d}", i, ttl=1000.0)
        on_disk.append(len(rows(db_path)))
        if on_disk[-1] == i + 1:
            break  # only the new entries are left
    else:
        pytest.fail(f"expired entries left after 30 sweeps: {on_disk[-1] - 300} of 200")
    removed = [before + 1 - after for before, after in zip(on_disk, on_disk[1:])]
    assert max(removed) <= 20  # a sweep removes at most the 2 * cleanup_every keys it looks at
    assert sum(1 for count in removed if count > 0) >= 10  # so it took steps
    cache.close()


def test_the_periodic_sweep_keeps_a_file_of_short_lived_entries_bounded(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=100.0, cleanup_every=50)
    largest = 0
    for i in range(3000):  # one write a second: 100 entries live at any time
        cache.set(f"{i * 7919 % 3001:04d}", i)  # keys out of order, as hashed ones are
        clock.advance(1.0)
        if i % 100 == 0:
            largest = max(largest, len(rows(db_path)))
    assert largest <= 300
    cache.close()


def test_a_file_made_with_the_expiry_index_loses_it(db_path: Path, clock: ManualClock) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL,"
                   " compressed INTEGER NOT NULL) WITHOUT ROWID")
        db.execute("CREATE INDEX cache_expires ON cache (expires)")
        db.execute("INSERT INTO cache VALUES ('kept', '1', ?, 0)", (clock.now + 60,))
    cache = open_cache(db_path, clock)
    assert cache.get("kept") == 1
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == []
    cache.close()


def test_cleanup_with_nothing_expired_removes_nothing(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0)
    cache.set("a", 1)
    assert cache.cleanup() == 0
    assert cache.get("a") == 1
    cache.close()


# -- persistence --------------------------------------------------------------------------


def test_values_and_expiry_times_survive_close_and_reopen(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, ttl=10.0)
    cache.set("short", "s")
    cache.set("long", {"l": 1}, ttl=100.0)
    cache.close()
    expires = rows(db_path)
    assert expires["short"][0] == pytest.approx(clock.now + 10.0)
    assert expires["long"][0] == pytest.approx(clock.now + 100.0)

    clock.advance(50.0)
    reopened = open_cache(db_path, clock, ttl=10.0)
    assert reopened.get("short", MISSING) is MISSING
    assert reopened.get("long") == {"l": 1}
    assert reopened.stats()["diskHits"] == 1
    clock.advance(50.0)
    assert reopened.get("long", MISSING) is MISSING
    reopened.close()


def test_context_manager_closes_and_a_new_instance_sees_the_data(db_path: Path, clock: ManualClock) -> None:
    with open_cache(db_path, clock) as cache:
        cache.set("k", [1, 2, 3])
    assert not Path(f"{db_path}-wal").exists() or Path(f"{db_path}-wal").stat().st_size == 0
    with open_cache(db_path, clock) as cache:
        assert cache.get("k") == [1, 2, 3]


def test_writes_are_on_disk_before_set_returns(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    cache.set("k", "v")
    other = open_cache(db_path, clock)  # a second reader while the first is still open
    assert other.get("k") == "v"
    other.close()
    cache.close()


def test_on_an_event_loop_writes_are_grouped_and_answered_before_they_are_committed(
        db_path: Path, clock: ManualClock) -> None:
    async def scenario() -> None:
        cache = open_cache(db_path, clock, max_memory_items=1)  # the second write pushes the first out of memory
        cache.set("a", 1)
        cache.set("b", 2)
        assert rows(db_path) == {}  # grouped: not committed yet...
        assert cache.get("a") == 1 and cache.stats()["diskHits"] == 1  # ...yet the store answers it
        assert cache.delete("b") is True  # a grouped write is there to delete
        assert cache.get("b") is None
        await asyncio.sleep(0)
        assert await asyncio.to_thread(_wait_for, lambda: "a" in rows(db_path), 2.0)  # within the group's time
        assert "b" not in rows(db_path)
        cache.close()

    asyncio.run(scenario())


def test_a_full_group_is_committed_without_waiting(db_path: Path, clock: ManualClock) -> None:
    async def scenario() -> None:
        cache = open_cache(db_path, clock)
        for i in range(WRITE_GROUP_ROWS):
            cache.set(f"k{i}", i)
        assert len(rows(db_path)) == WRITE_GROUP_ROWS  # no await: the loop never ran the timer
        cache.set("one more", 0)
        assert "one more" not in rows(db_path)
        cache.close()
        assert "one more" in rows(db_path)  # close commits what is grouped

    asyncio.run(scenario())


def test_a_write_grouped_on_a_loop_that_ended_is_committed_by_the_next_write(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)

    async def write(key: str) -> None:
        cache.set(key, 1)

    asyncio.run(write("first loop"))  # the loop ends before the group's timer fires
    assert rows(db_path) == {}
    cache.set("off a loop", 2)  # committed at once, and the grouped write with it
    assert set(rows(db_path)) == {"first loop", "off a loop"}
    asyncio.run(write("second loop"))
    asyncio.run(write("third loop"))  # its group's timer is on a loop that is gone: both are committed
    assert set(rows(db_path)) == {"first loop", "off a loop", "second loop", "third loop"}
    cache.close()


def test_a_write_grouped_on_a_loop_is_committed_at_exit_without_close(db_path: Path) -> None:
    script = (f"import asyncio\nfrom tooloo_cli.resilience import PersistentCache\n"
              f"cache = PersistentCache({str(db_path)!r})\n"
              "async def main():\n    cache.set('k', 'v')\nasyncio.run(main())\n")  # no close, no await
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert set(rows(db_path)) == {"k"}


def test_a_store_refuses_a_nan_expiry_to_its_caller_and_keeps_the_other_writes(db_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteCacheStore(db_path)
        store.set("good", (b"1", 0), 2e9)
        with pytest.raises(ValueError, match="NaN"):
            store.set("bad", (b"2", 0), math.nan)
        store.close()

    asyncio.run(scenario())
    assert set(rows(db_path)) == {"good"}


def test_path_in_a_missing_directory_is_created(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "a" / "b" / "cache.db"
    with open_cache(path, clock) as cache:
        cache.set("k", 1)
        assert cache.stats()["persistent"] is True
    assert path.exists()


def _wait_for(condition: Any, seconds: float = 10.0) -> bool:
    """Polls `condition` until it holds or `seconds` pass (the checkpoint thread's pace is the OS's)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_the_log_is_checkpointed_into_the_file_while_the_cache_is_open(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    empty = db_path.stat().st_size
    for i in range(2 * CHECKPOINT_EVERY):
        cache.set(f"k{i}", {"text": "x" * 100})
    # Nothing closed it: the store's own thread copied the log into the database file.
    assert _wait_for(lambda: db_path.stat().st_size > empty)
    assert cache.get("k0") == {"text": "x" * 100}
    cache.close()
    wal = Path(f"{db_path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # and close still leaves no log behind
    with sqlite3.connect(db_path) as reader:
        assert reader.execute("SELECT count(*) FROM cache").fetchone()[0] == 2 * CHECKPOINT_EVERY


def test_the_checkpoint_thread_never_recreates_a_file_that_is_gone(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock)
    db_path.unlink()  # the writer keeps its open file; nobody should make a new, empty one here
    for i in range(2 * CHECKPOINT_EVERY):
        cache.set(f"k{i}", i)
    time.sleep(0.2)
    assert not db_path.exists()
    assert cache.get(f"k{2 * CHECKPOINT_EVERY - 1}") == 2 * CHECKPOINT_EVERY - 1
    cache.close()


def test_close_ends_the_checkpoint_thread(db_path: Path, clock: ManualClock) -> None:
    def checkpointers() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name.startswith("checkpoint ")
                and str(db_path) in thread.name]

    cache = open_cache(db_path, clock)
    for i in range(CHECKPOINT_EVERY):
        cache.set(f"k{i}", i)
    assert len(checkpointers()) == 1  # started by the first checkpoint, and only one
    cache.close()
    assert checkpointers() == []


# -- memory layer (LRU) -------------------------------------------------------------------


def test_lru_evicts_the_least_recently_used_and_a_get_refreshes_recency(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=2)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now more recent than b
    cache.set("c", 3)  # evicts b
    stats = cache.stats()
    assert stats["memoryItems"] == 2
    assert stats["evictions"] == 1
    assert stats["diskItems"] == 3

    assert cache.get("a") == 1
    assert cache.get("c") == 3
    assert cache.stats()["memoryHits"] == 3
    assert cache.stats()["diskHits"] == 0

    assert cache.get("b") == 2  # served from disk, promoted, evicting a
    stats = cache.stats()
    assert stats["diskHits"] == 1
    assert stats["evictions"] == 2
    assert stats["memoryItems"] == 2
    assert cache.get("b") == 2
    assert cache.stats()["memoryHits"] == 4  # promoted: the second read is from memory
    cache.close()


def test_set_of_an_existing_key_refreshes_recency(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=2)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("a", 10)  # a is now the most recent
    cache.set("c", 3)  # evicts b
    assert cache.get("a") == 10
    assert cache.stats()["diskHits"] == 0
    assert cache.get("b") == 2
    assert cache.stats()["diskHits"] == 1
    cache.close()


def test_memory_only_cache_forgets_evicted_entries(clock: ManualClock) -> None:
    cache = open_cache(None, clock, max_memory_items=2)
    for key in "abc":
        cache.set(key, key)
    assert cache.get("a", MISSING) is MISSING
    assert cache.get("c") == "c"
    stats = cache.stats()
    assert stats["persistent"] is False
    assert stats["diskItems"] == 0
    assert stats["diskBytes"] == 0
    cache.close()  # harmless without a disk layer


# -- compression --------------------------------------------------------------------------


def test_values_above_the_threshold_are_stored_compressed_and_round_trip(db_path: Path, clock: ManualClock) -> None:
    big = {"text": "lorem ipsum " * 200, "n": list(range(50))}
    cache = open_cache(db_path, clock, compress_threshold=64)
    cache.set("big", big)
    cache.set("small", {"t": "x"})
    cache.close()
    stored = rows(db_path)
    assert stored["big"][1] == 1
    assert stored["small"][1] == 0
    with sqlite3.connect(db_path) as db:
        (size,) = db.execute("SELECT length(value) FROM cache WHERE key = 'big'").fetchone()
    assert size < len("lorem ipsum " * 200)
    with open_cache(db_path, clock, compress_threshold=64) as reopened:
        assert reopened.get("big") == big
        assert reopened.get("small") == {"t": "x"}


def test_compression_threshold_is_exclusive(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, compress_threshold=10)
    cache.set("at", "x" * 8)  # '"xxxxxxxx"' is exactly 10 bytes
    cache.set("above", "x" * 9)  # 11 bytes
    cache.close()
    stored = rows(db_path)
    assert stored["at"][1] == 0
    assert stored["above"][1] == 1
    with open_cache(db_path, clock, compress_threshold=10) as reopened:
        assert reopened.get("above") == "x" * 9


def test_compressed_values_are_readable_by_a_cache_with_another_threshold(db_path: Path, clock: ManualClock) -> None:
    with open_cache(db_path, clock, compress_threshold=0) as cache:
        cache.set("k", {"a": "b" * 100})
    with open_cache(db_path, clock, compress_threshold=10_000) as cache:
        assert cache.get("k") == {"a": "b" * 100}


# -- recovery -----------------------------------------------------------------------------


def test_corrupt_file_is_moved_aside_and_the_cache_starts_afresh(
    db_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"this is not a database\x00\xff" * 100
    db_path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="tooloo_cli.resilience.cache"):
        cache = open_cache(db_path, clock)
    aside = [p for p in db_path.parent.iterdir() if re.fullmatch(r"cache\.db\.corrupt-\d+", p.name)]
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    assert any(r.levelno == logging.WARNING and "cache.db" in r.getMessage() for r in caplog.records)

    stats = cache.stats()
    assert stats["persistent"] is True
    assert stats["recoveries"] == 1
    assert stats["diskItems"] == 0
    cache.set("k", "v")
    assert cache.get("k") == "v"
    cache.close()
    with open_cache(db_path, clock) as reopened:
        assert reopened.get("k") == "v"
        assert reopened.stats()["recoveries"] == 0


def test_a_database_failing_its_integrity_check_is_a_resilience_error_and_an_sqlite_one(db_path: Path) -> None:
    assert issubclass(CorruptDatabaseError, ResilienceError) and issubclass(CorruptDatabaseError, sqlite3.DatabaseError)
    db_path.write_bytes(b"this is not a database" * 200)
    assert integrity_problem(db_path) is not None and integrity_problem(db_path.with_name("absent.db")) is None


def test_stale_wal_files_of_a_corrupt_database_are_discarded(db_path: Path, clock: ManualClock) -> None:
    db_path.write_bytes(b"\x01" * 4096)
    Path(f"{db_path}-wal").write_bytes(b"\x02" * 100)
    Path(f"{db_path}-shm").write_bytes(b"\x03" * 100)
    with open_cache(db_path, clock) as cache:
        assert cache.stats()["persistent"] is True
        cache.set("k", 1)
        assert cache.get("k") == 1
    with open_cache(db_path, clock) as cache:
        assert cache.get("k") == 1


def test_unrecoverable_location_falls_back_to_memory_only(tmp_path: Path, clock: ManualClock) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file")
    cache = open_cache(blocker / "cache.db", clock)  # must not raise
    stats = cache.stats()
    assert stats["persistent"] is False
    assert stats["diskItems"] == 0
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    assert cache.delete("k") is True
    cache.close()
    assert blocker.read_text() == "a regular file"


def test_unrecoverable_nested_location_falls_back_to_memory_only(tmp_path: Path, clock: ManualClock) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = open_cache(blocker / "sub" / "cache.db", clock)  # must not raise
    assert cache.stats()["persistent"] is False
    cache.set("k", 1)
    assert cache.get("k") == 1


def test_an_undecodable_row_is_a_miss_and_is_dropped(db_path: Path, clock: ManualClock) -> None:
    with open_cache(db_path, clock) as cache:
        cache.set("good", "kept")
    with sqlite3.connect(db_path) as db:  # a row as something else, or a damaged sector, left it
        db.execute("INSERT INTO cache VALUES (?, ?, ?, ?)", ("bad", b"\x78\x9c not zlib", clock() + 100, 1))
        db.execute("INSERT INTO cache VALUES (?, ?, ?, ?)", ("text", b"{not json", clock() + 100, 0))
    with open_cache(db_path, clock) as cache:
        assert cache.get("bad", "default") == "default" and cache.get("text") is None  # before: an exception
        assert cache.get("good") == "kept"
        stats = cache.stats()
        assert stats["undecodable"] == 2 and stats["persistent"] is True and stats["recoveries"] == 0
    assert set(rows(db_path)) == {"good"}


def test_repeated_corruption_keeps_only_the_newest_copies_aside(db_path: Path, clock: ManualClock) -> None:
    for round_ in range(5):
        db_path.write_bytes(b"garbage %d " % round_ * 500)
        Path(f"{db_path}-wal").unlink(missing_ok=True)
        open_cache(db_path, clock).close()
    aside = sorted(p.name for p in db_path.parent.iterdir() if ".corrupt-" in p.name)
    assert len(aside) == 3


def test_a_full_disk_is_not_corruption_the_cache_serves_from_memory_and_heals(
        tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        path = disk / "cache.db"
        cache = open_cache(path, clock, retry_after=0.2)
        cache.set("before", "on disk")
        filler = fill(disk)
        with caplog.at_level(logging.WARNING, logger="tooloo_cli.resilience.cache"):
            for number in range(50):
                cache.set(f"k{number}", "v" * 2000)
        full = cache.stats()
        assert cache.get("k49") == "v" * 2000 and cache.get("before") == "on disk"  # served meanwhile
        filler.unlink()
        time.sleep(0.3)
        cache.set("after", "on disk again")
        healed = cache.stats()
        cache.close()
        aside = [p.name for p in disk.iterdir() if ".corrupt-" in p.name]
        on_disk = rows(path)
    assert full["persistent"] is False and "full" in full["diskError"] and full["recoveries"] == 0
    assert aside == []  # before: renamed aside again and again, and memory-only for good
    assert healed["persistent"] is True and healed["diskError"] is None
    assert "before" in on_disk and "after" in on_disk
    assert caplog.text.count("caching in memory only") == 1  # said once, not per failed write


def test_the_readiness_check_alone_sees_the_disk_work_again(tmp_path: Path, clock: ManualClock) -> None:
    """/ready asks `shared_state()`, which counts nothing: an idle replica (or one that gets no traffic
    because it is not ready) must still find its disk usable again, with no request touching the cache."""
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache's directory should be")
    cache = open_cache(blocker / "cache.db", clock, retry_after=0.1)
    assert not cache.shared_state().persistent and cache.shared_state().error
    blocker.unlink()
    time.sleep(0.15)
    assert cache.shared_state().persistent and cache.shared_state().error is None
    cache.close()


# -- stats --------------------------------------------------------------------------------


def test_stats_are_plain_numbers(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=1)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.get("a")
    cache.get("b")
    cache.get("missing")
    stats = cache.stats()
    for field in STAT_FIELDS:
        assert _is_number(stats[field]), field
    assert stats["persistent"] is True
    assert stats["maxMemoryItems"] == 1
    assert stats["ttlSeconds"] == cache.ttl
    assert stats["diskBytes"] > 0
    cache.close()


def test_stats_count_hits_misses_and_hit_rate(db_path: Path, clock: ManualClock) -> None:
    cache = open_cache(db_path, clock, max_memory_items=1)
    cache.set("a", 1)
    cache.set("b", 2)  # a on disk only
    cache.get("b")  # memory hit
    cache.get("a")  # disk hit
    cache.get("a")  # memory hit
    cache.get("zzz")  # miss
    stats = cache.stats()
    assert stats["hits"] == 3
    assert stats["memoryHits"] == 2
    assert stats["diskHits"] == 1
    assert stats["misses"] == 1
    assert stats["hitRate"] == pytest.approx(0.75)
    assert stats["writes"] == 2
    assert stats["memoryItems"] == 1
    assert stats["diskItems"] == 2
    cache.close()


def test_stats_of_a_fresh_cache(db_path: Path, clock: ManualClock) -> None:
    with open_cache(db_path, clock) as cache:
        stats = cache.stats()
        assert {f: stats[f] for f in STAT_FIELDS if f != "diskBytes"} == {
            f: 0 for f in STAT_FIELDS if f != "diskBytes"
        }
        assert stats["hitRate"] == 0.0


# -- properties ---------------------------------------------------------------------------

_keys = st.sampled_from([f"k{i}" for i in range(8)])
_values = st.one_of(
    st.integers(-1000, 1000),
    st.text(max_size=20),
    st.lists(st.integers(0, 9), max_size=5),
    st.dictionaries(st.text(max_size=3), st.booleans(), max_size=3),
)
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _keys, _values, st.sampled_from([None, 5, 50])),
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("delete"), _keys),
        st.tuples(st.just("advance"), st.integers(1, 20)),
    ),
    max_size=40,
)


@settings(max_examples=50, deadline=None)
@given(max_items=st.integers(min_value=1, max_value=4), operations=_operations)
def test_property_lru_layer_is_bounded_and_nothing_live_is_lost(max_items: int, operations: list[tuple]) -> None:
    clock = ManualClock(1_000_000.0)
    default_ttl = 30
    model: dict[str, tuple[Any, float]] = {}  # key -> (value, expires)

    def expect(key: str) -> Any:
        """The model's live value for `key`, or MISSING."""
        entry = model.get(key)
        return entry[0] if entry is not None and entry[1] > clock.now else MISSING

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prop.db"
        cache = PersistentCache(path, ttl=default_ttl, max_memory_items=max_items, clock=clock)
        for op in operations:
            if op[0] == "set":
                _, key, value, ttl = op
                cache.set(key, value, ttl=ttl)
                model[key] = (value, clock.now + (default_ttl if ttl is None else ttl))
            elif op[0] == "get":
                assert cache.get(op[1], MISSING) == expect(op[1])
            elif op[0] == "delete":
                cache.delete(op[1])
                model.pop(op[1], None)
            else:
                clock.advance(op[1])
            assert cache.stats()["memoryItems"] <= max_items

        for key in (f"k{i}" for i in range(8)):
            got = cache.get(key, MISSING)
            wanted = expect(key)
            assert got == wanted if wanted is not MISSING else got is MISSING
            assert cache.stats()["memoryItems"] <= max_items
        cache.close()

        # Everything live is still there for a new process, from disk alone.
        reopened = PersistentCache(path, ttl=default_ttl, max_memory_items=max_items, clock=clock)
        for key in (f"k{i}" for i in range(8)):
            wanted = expect(key)
            got = reopened.get(key, MISSING)
            assert got == wanted if wanted is not MISSING else got is MISSING
        assert reopened.stats()["memoryItems"] <= max_items
        reopened.close()

