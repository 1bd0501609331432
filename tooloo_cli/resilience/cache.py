"""Two-layer cache: an LRU in memory over a SQLite file on disk.

Writes go through to disk at once (WAL, synchronous=NORMAL: a commit survives the
process dying, at ~12 µs median), so values outlive a restart; reads are served from
memory and fall back to disk, promoting what they find. Values are JSON, compressed with
zlib above `compress_threshold` bytes.

    cache = PersistentCache(".tooloo/budget-cache.db", ttl=5.0)
    cache.set("prompt:hello", {"text": "Hello!"})
    cache.get("prompt:hello")          # {'text': 'Hello!'}
    cache.get("prompt:other", None)    # None (a miss)

Failures of the disk layer never fail a lookup:

- a row that cannot be decoded is a miss, and is deleted;
- a corrupt file (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check) is moved aside and
  recreated, with a logged warning (`recoveries` counts it);
- anything else (a full disk, an I/O error, a lock) leaves the file alone: the cache works
  from memory, reports the problem (`persistent: false`, `diskError`), and tries the disk
  again after `retry_after` seconds, so it heals without a restart once space returns.

The file is created 0600. The cache is meant for one thread (one event loop); it does no locking.
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

from tooloo_cli.resilience.sqlite_files import check_integrity, is_corruption, move_aside, prepare_private

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
    After a disk error that is not corruption, the disk is left alone for `retry_after`
    seconds, then tried again by the next operation.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        ttl: float = 300.0,
        max_memory_items: int = 1000,
        compress_threshold: int = 1024,
        cleanup_every: int = 1000,
        retry_after: float = 5.0,
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
        self.retry_after = retry_after
        self._clock = clock
        self._memory: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        self.disk_error: str | None = None  # the last disk failure, while it lasts
        self._retry_at = 0.0
        self.recoveries = self.disk_errors = self.undecodable = 0
        self.hits = self.misses = self.memory_hits = self.disk_hits = 0
        self.writes = self.evictions = self.expirations = 0
        if self.path is not None:
            self._connect()

    # -- disk layer ---------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        assert self.path is not None
        prepare_private(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            check_integrity(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, may_recover: bool = True) -> None:
        """Opens the file; a corrupt one is moved aside first, any other failure is retried later."""
        try:
            self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            self._failed(exc, may_recover)
            return
        self.disk_error = None

    def _failed(self, exc: Exception, may_recover: bool = True) -> None:
        """A disk failure: corruption is recovered at once (once: a fresh file that fails again
        waits for the retry like any other failure); anything else waits for the retry."""
        assert self.path is not None
        if may_recover and is_corruption(exc) and self.path.is_file():
            self.recoveries += 1
            self._close_db()
            try:
                aside = move_aside(self.path)
            except OSError as again:
                self._note_disk_error(f"corrupt ({exc}) and cannot be moved aside ({again})")
                return
            logger.warning("cache file %s is corrupt (%s); moved it to %s, starting afresh", self.path, exc, aside)
            self._connect(may_recover=False)
            return
        self._note_disk_error(str(exc))

    def _note_disk_error(self, reason: str) -> None:
        if self.disk_error is None:
            logger.warning("cache file %s: %s; caching in memory only, trying the disk again every %gs",
                           self.path, reason, self.retry_after)
        self.disk_error = reason
        self.disk_errors += 1
        self._retry_at = time.monotonic() + self.retry_after

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _disk(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Runs one statement on the disk layer; a failure is handled (see the module), not raised.

        Only errors of the file or the disk are handled: a constraint or programming
        error is a bug of the caller and is raised.
        """
        if self._db is None or self.disk_error is not None:
            if self.disk_error is None or time.monotonic() < self._retry_at:
                return []  # no disk layer (none asked for, or closed), or not yet time to retry
            if self._db is None:
                self._connect()
                if self._db is None:
                    return []
        try:
            rows = self._db.execute(sql, params).fetchall()
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            self._failed(exc)
            return []
        if self.disk_error is not None:
            logger.warning("cache file %s works again", self.path)
            self.disk_error = None
        return rows

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
        elif self.path is not None:
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
        if not isinstance(expires, (int, float)) or expires <= self._clock():
            self._expire(key)
            return _MISSING
        try:
            value = self._decode(data, compressed)
        except (zlib.error, ValueError, TypeError) as exc:  # written by something else, or damaged
            self.undecodable += 1
            logger.warning("cache file %s: the entry %r cannot be decoded (%s); dropped it", self.path, key, exc)
            self._disk("DELETE FROM cache WHERE key = ?", (key,))
            return _MISSING
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
        if self.path is not None:
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
            "persistent": self._db is not None and self.disk_error is None,
            "diskError": self.disk_error,
            "diskErrors": self.disk_errors,
            "recoveries": self.recoveries,
            "undecodable": self.undecodable,
        }
