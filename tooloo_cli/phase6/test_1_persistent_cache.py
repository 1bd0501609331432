"""PersistentCache: an LRU memory layer over a SQLite file that survives restarts."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tooloo_cli.phase6.support import ManualClock
from tooloo_cli.resilience import PersistentCache


def test_stores_and_returns_values_from_memory(tmp_path: Path) -> None:
    with PersistentCache(tmp_path / "cache.db", ttl=5) as cache:
        cache.set("prompt:hello", {"text": "Hello!", "tokens": 2})
        assert cache.get("prompt:hello") == {"text": "Hello!", "tokens": 2}
        assert cache.get("prompt:other") is None
        stats = cache.stats()
        assert (stats["hits"], stats["memoryHits"], stats["misses"], stats["writes"]) == (1, 1, 1, 1)
        assert stats["hitRate"] == 0.5


def test_entries_expire_after_their_ttl(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    with PersistentCache(tmp_path / "cache.db", ttl=5, clock=clock) as cache:
        cache.set("short", 1, ttl=1)
        cache.set("default", 2)
        clock.advance(1.5)
        assert cache.get("short") is None
        assert cache.get("default") == 2
        clock.advance(4)
        assert cache.get("default") is None
        assert cache.stats()["expirations"] == 2


def test_values_survive_a_process_restart(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    writer = (
        "import sys; from tooloo_cli.resilience import PersistentCache\n"
        "cache = PersistentCache(sys.argv[1], ttl=60)\n"
        "cache.set('answer', {'text': 'forty-two'})\n"
        "sys.exit(0)  # no close(): the write must already be on disk\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(path)], check=True, timeout=30)
    with PersistentCache(path, ttl=60) as cache:
        assert cache.get("answer") == {"text": "forty-two"}
        assert cache.stats()["diskHits"] == 1


def test_lru_memory_layer_evicts_least_recently_used_and_disk_still_serves(tmp_path: Path) -> None:
    with PersistentCache(tmp_path / "cache.db", ttl=60, max_memory_items=2) as cache:
        cache.set("a", 1)
        cache.set("b", 2)
        cache.get("a")  # a is now the most recently used
        cache.set("c", 3)  # evicts b from memory
        stats = cache.stats()
        assert stats["memoryItems"] == 2 and stats["diskItems"] == 3 and stats["evictions"] == 1
        assert cache.get("b") == 2
        assert cache.stats()["diskHits"] == 1


def test_large_values_are_compressed_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    report = {"text": "resilience " * 500}
    with PersistentCache(path, ttl=60, compress_threshold=256) as cache:
        cache.set("report", report)
        cache.set("small", "tiny")
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT key, compressed FROM cache"))
        (stored,) = db.execute("SELECT length(value) FROM cache WHERE key = 'report'").fetchone()
    assert rows == {"report": 1, "small": 0}
    assert stored < len("resilience " * 500) / 10
    with PersistentCache(path, ttl=60) as cache:
        assert cache.get("report") == report


def test_a_corrupt_database_is_moved_aside_and_recreated(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with PersistentCache(path, ttl=60) as cache:
        cache.set("k", "v")
        assert cache.get("k") == "v"
        assert cache.stats()["persistent"] is True and cache.stats()["recoveries"] == 1
    assert [p.name for p in tmp_path.glob("cache.db.corrupt-*")]
