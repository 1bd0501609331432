"""Two-layer cache: an LRU in memory over a SQLite file on disk.

Writes go through to disk at once (WAL, synchronous=NORMAL: a commit survives the
process dying, at ~12 µs median), so values outlive a restart; reads are served from
memory and fall back to disk, promoting what they find. Values are JSON, compressed with
zlib above `compress_threshold` bytes.

    cache = PersistentCache(".tooloo/budget-cache.db", ttl=5.0)
    cache.set("prompt:hello", {"text": "Hello!"})
    cache.get("prompt:hello")          # {'text': 'Hello!'}
    cache.get("prompt:other", None)    # None (a miss)

A database file that is corrupt or unreadable is moved aside and recreated with a
logged warning; if even that fails the cache keeps working from memory alone.
The cache is meant for one thread (one event loop); it does no locking.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL NOT NULL,
    compressed INTEGER NOT NULL
) WITHOUT ROWID
"""
_MISSING = object()


class PersistentCache:
    """LRU memory layer of `max_memory_items` over a SQLite file at `path`.

    `path=None` keeps everything in memory (nothing survives a restart). `ttl` is the
    default time to live in seconds; `set` may give another per entry. Every
    `cleanup_every` writes, expired entries are swept from both layers. `clock` returns
    epoch seconds, because expiry times are stored on disk and must survive a restart.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        ttl: float = 300.0,
        max_memory_items: int = 1000,
        compress_threshold: int = 1024,
        cleanup_every: int = 1000,
        clock: Any = time.time,
    ) -> None:
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be a finite number > 0, got {ttl}")
        if max_memory_items < 1:
            raise ValueError(f"max_memory_items must be at least 1, got {max_memory_items}")
        self.path = Path(path) if path is not None else None
        self.ttl = ttl
        self.max_memory_items = max_memory_items
        self.compress_threshold = compress_threshold
        self.cleanup_every = cleanup_every
        self._clock = clock
        self._memory: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self.recoveries = 0
        self.hits = self.misses = self.memory_hits = self.disk_hits = 0
        self.writes = self.evictions = self.expirations = 0
        if self.path is not None:
            self._db = self._open_or_recover()

    # -- disk layer ---------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            (verdict,) = db.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {verdict}")
        except BaseException:
            db.close()
            raise
        return db

    def _open_or_recover(self) -> sqlite3.Connection | None:
        try:
            return self._open()
        except (sqlite3.Error, OSError) as exc:
            return self._recover(exc)

    def _recover(self, exc: Exception) -> sqlite3.Connection | None:
        """Moves the broken file aside and starts a new one; memory-only if that fails."""
        assert self.path is not None
        self.recoveries += 1
        if self._db is not None:
            self._db.close()
            self._db = None
        try:
            if self.path.is_file():
                aside = self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}")
                self.path.replace(aside)
                logger.warning("cache file %s is unusable (%s); moved it to %s, starting afresh", self.path, exc, aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            return self._open()
        except (OSError, sqlite3.Error) as again:
            logger.error("cache file %s cannot be recreated (%s); caching in memory only", self.path, again)
            return None

    def _disk(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Runs one statement on the disk layer; a broken file is recovered, not raised.

        Only errors of the file itself count as broken: a constraint or programming
        error is a bug of the caller and is raised, never "recovered" by moving data aside.
        """
        if self._db is None:
            return []
        try:
            return self._db.execute(sql, params).fetchall()
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            self._db = self._recover(exc)
            return []

    def _encode(self, value: Any) -> tuple[bytes, int]:
        data = json.dumps(value, separators=(",", ":")).encode()
        if len(data) > self.compress_threshold:
            return zlib.compress(data, 1), 1
        return data, 0

    @staticmethod
    def _decode(data: bytes, compressed: int) -> Any:
        return json.loads(zlib.decompress(data) if compressed else data)

    # -- memory layer -------------------------------------------------------------

    def _remember(self, key: str, value: Any, expires: float) -> None:
        memory = self._memory
        memory[key] = (value, expires)
        memory.move_to_end(key)
        if len(memory) > self.max_memory_items:
            memory.popitem(last=False)
            self.evictions += 1

    # -- public API ---------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The live value under `key`, or `default`. The memory copy is returned as is."""
        entry = self._memory.get(key)
        if entry is not None:
            if entry[1] > self._clock():
                self._memory.move_to_end(key)
                self.hits += 1
                self.memory_hits += 1
                return entry[0]
            self._expire(key)
        elif self._db is not None:
            value = self._get_from_disk(key)
            if value is not _MISSING:
                return value
        self.misses += 1
        return default

    def _get_from_disk(self, key: str) -> Any:
        rows = self._disk("SELECT value, expires, compressed FROM cache WHERE key = ?", (key,))
        if not rows:
            return _MISSING
        data, expires, compressed = rows[0]
        if expires <= self._clock():
            self._expire(key)
            return _MISSING
        value = self._decode(data, compressed)
        self._remember(key, value, expires)
        self.hits += 1
        self.disk_hits += 1
        return value

    def _expire(self, key: str) -> None:
        self._memory.pop(key, None)
        self._disk("DELETE FROM cache WHERE key = ?", (key,))
        self.expirations += 1

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Stores `value` (JSON-serialisable) for `ttl` seconds, on disk before returning."""
        ttl = self.ttl if ttl is None else ttl
        if not 0 < ttl < math.inf:  # NaN fails this too
            raise ValueError(f"ttl must be a finite number > 0, got {ttl}")
        expires = self._clock() + ttl
        if self._db is not None:
            data, compressed = self._encode(value)
            self._disk("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", (key, data, expires, compressed))
        else:
            json.dumps(value)  # the same contract with or without a disk layer
        self._remember(key, value, expires)
        self.writes += 1
        if self.writes % self.cleanup_every == 0:
            self.cleanup()  # expired rows nobody reads again would otherwise stay on disk for good

    def delete(self, key: str) -> bool:
        """Removes `key` from both layers; True if it was there."""
        in_memory = self._memory.pop(key, None) is not None
        on_disk = bool(self._disk("DELETE FROM cache WHERE key = ? RETURNING key", (key,)))
        return in_memory or on_disk

    def clear(self) -> None:
        """Removes every entry from both layers."""
        self._memory.clear()
        self._disk("DELETE FROM cache")

    def cleanup(self) -> int:
        """Removes expired entries from both layers; returns how many were removed."""
        now = self._clock()
        stale = [key for key, (_, expires) in self._memory.items() if expires <= now]
        for key in stale:
            del self._memory[key]
        removed = {key for (key,) in self._disk("DELETE FROM cache WHERE expires <= ? RETURNING key", (now,))}
        removed.update(stale)
        self.expirations += len(removed)
        return len(removed)

    def close(self) -> None:
        """Checkpoints the write-ahead log into the database file and closes it."""
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.warning("cache file %s: checkpoint on close failed (%s)", self.path, exc)
            self._db.close()
            self._db = None

    def __enter__(self) -> PersistentCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters and sizes as plain numbers."""
        lookups = self.hits + self.misses
        disk_items = self._disk("SELECT count(*) FROM cache")
        disk_bytes = 0
        if self.path is not None and self._db is not None:
            for name in (str(self.path), f"{self.path}-wal"):
                try:
                    disk_bytes += os.path.getsize(name)
                except OSError:
                    pass
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": self.hits / lookups if lookups else 0.0,
            "memoryHits": self.memory_hits,
            "diskHits": self.disk_hits,
            "writes": self.writes,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "memoryItems": len(self._memory),
            "maxMemoryItems": self.max_memory_items,
            "diskItems": disk_items[0][0] if disk_items else 0,
            "diskBytes": disk_bytes,
            "ttlSeconds": self.ttl,
            "persistent": self._db is not None,
            "recoveries": self.recoveries,
        }
