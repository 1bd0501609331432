"""Two-layer cache: a policy (PersistentCache) over an in-process LRU and a shared store.

The policy owns the time to live, the encoding (JSON, zlib above `compress_threshold`
bytes) and the counters. Entries live in two CacheStores: a MemoryCacheStore of decoded
values (bounded, least recently used out first) in front of a shared store of encoded
ones, by default a SQLiteCacheStore, a file that outlives the process. Writes go through
to the shared store (which may commit them a moment later: see below); reads are served
from memory and fall back to the shared store, promoting what they find.

    cache = PersistentCache(".tooloo/budget-cache.db", ttl=5.0)      # over SQLiteCacheStore(path)
    cache.set("prompt:hello", {"text": "Hello!"})
    cache.get("prompt:hello")          # {'text': 'Hello!'}
    cache.get("prompt:other", None)    # None (a miss)
    cache.snapshot().memory_hits       # 1; stats() is the snapshot's JSON
    await cache.asnapshot()            # the same, the file's entries counted in a thread (for a service's loop)
    PersistentCache(store=SQLiteCacheStore(path, retry_after=1.0))   # a store of the caller's choice
    PersistentCache(None)              # memory only: nothing survives a restart
    await PersistentCache(store=redis_store).aget("prompt:hello")   # over a SharedCacheStore (Redis)

A CacheStore keeps entries `(value, expires)` under string keys, `expires` in epoch
seconds (stored entries must survive a restart). It may hand back an entry that has
expired: the policy decides, and deletes it. Its failures never fail a lookup;
SQLiteCacheStore handles its file so:

- a row that cannot be decoded is a miss, and is deleted;
- a corrupt file (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check) is moved aside and
  recreated, with a logged warning (`recoveries` counts it);
- anything else (a full disk, an I/O error, a lock) leaves the file alone: the cache works
  from memory, reports the problem (`persistent: false`, `diskError`), and tries the disk
  again after `retry_after` seconds, so it heals without a restart once space returns.

Off an event loop, a write is durable on return (WAL, synchronous=NORMAL: a commit
survives the process dying). On one (a service's), SQLiteCacheStore groups writes: they
are committed together WRITE_GROUP_SECONDS after the first of a group, or at once when
WRITE_GROUP_ROWS are waiting, and by `flush` and `close`; meanwhile the store answers
them itself, so its own reads never miss them; a group left waiting when its loop ends is
committed by the store's next operation, by `close`, or at the process's exit. A commit
per write costs ~30 µs here (its locks and writes) where a group of 64 costs ~5 µs a row.
The price is bounded: a process killed outright loses the writes of its last 50 ms (as
long as its loop keeps turning; at most WRITE_GROUP_ROWS of them), answers the next miss
recomputes, and another process reading the file sees a write up to 50 ms late.
The write-ahead log is copied into the file (checkpointed) every CHECKPOINT_EVERY
writes by a thread of the store's own, so no write waits for the fsyncs a checkpoint
makes: `tooloo bench modules` reports the mean of a batch of writes on an event loop,
grouped commits and checkpoints included.
The file is created 0600. The cache is meant for one thread (one event loop); it does no
locking (the checkpoint thread has its own connection, and shares nothing else).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable
from urllib.parse import quote

from tooloo_cli.resilience.sqlite_files import check_integrity, is_corruption, move_aside, prepare_private

logger = logging.getLogger(__name__)

V = TypeVar("V")
_MISSING = object()


class Encoded(NamedTuple):
    """A value as a shared store keeps it: JSON bytes, zlib-compressed when `compressed` is 1."""

    data: bytes
    compressed: int


# Building the tuple directly skips NamedTuple's Python-level __new__ on every disk hit.
_encoded = partial(tuple.__new__, Encoded)
# json.dumps with any option builds a new JSONEncoder per call (a fifth of a write's Python
# time); one made once encodes alike.
_to_json = json.JSONEncoder(separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a CacheStore reports about itself.

    `persistent`: its entries outlive this process, and it works right now. `error` is
    its current failure (None while it works); `errors` and `recoveries` count failures
    and repaired files since it was made; `evictions` entries it dropped to stay bounded.
    """

    items: int
    bytes: int = 0
    evictions: int = 0
    persistent: bool = False
    error: str | None = None
    errors: int = 0
    recoveries: int = 0


@runtime_checkable
class CacheStore(Protocol[V]):
    """Entries `(value, expires)` under string keys. A store never raises for its own
    failures (a full disk, a lost connection): it answers as if empty and says so in `stats`."""

    def get(self, key: str) -> tuple[V, float] | None:
        """The entry under `key` (possibly expired: the caller decides), or None."""
        ...

    def set(self, key: str, value: V, expires: float) -> None: ...

    def delete(self, key: str) -> bool:
        """Removes `key`; True if it was there."""
        ...

    def clear(self) -> None: ...

    def cleanup(self, now: float) -> list[str]:
        """Removes the entries expired at `now`; returns their keys."""
        ...

    def sweep(self, now: float, rows: int) -> list[str]:
        """`cleanup` in bounded steps: removes what has expired at `now` among at most `rows`
        entries, the next ones after the last call's (from the start again past the end), so
        that repeated calls reach every entry. Returns the removed keys."""
        ...

    def close(self) -> None: ...

    def stats(self) -> StoreStats: ...


@runtime_checkable
class SharedCacheStore(CacheStore[V], Protocol):
    """A CacheStore many processes reach over the network (Redis, say). Its lookups and writes are
    awaited round trips (`fetch`, `put`: what PersistentCache's `aget` and `aset` use); like any
    store it never raises for its own failures (it answers "nothing found", and says why in
    `shared_state`). Its sync `get` finds nothing (the memory layer answers alone) and its sync
    writes are sent in the background."""

    async def fetch(self, key: str) -> tuple[V, float] | None: ...

    async def put(self, key: str, value: V, expires: float) -> None: ...

    def shared_state(self) -> dict[str, Any]: ...


class MemoryCacheStore:
    """Entries in this process: an LRU of at most `max_items` (the least recently used out first).

    `entries` is the LRU itself, oldest first, for readers on a hot path: read it, never
    change it (`get` and `set` keep the order and the bound).
    """

    def __init__(self, max_items: int = 1000) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self.entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.evictions = 0

    def get(self, key: str) -> tuple[Any, float] | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def set(self, key: str, value: Any, expires: float) -> None:
        entries = self.entries
        entries[key] = (value, expires)
        entries.move_to_end(key)
        if len(entries) > self.max_items:
            entries.popitem(last=False)
            self.evictions += 1

    def delete(self, key: str) -> bool:
        return self.entries.pop(key, None) is not None

    def clear(self) -> None:
        self.entries.clear()

    def cleanup(self, now: float) -> list[str]:
        stale = [key for key, (_, expires) in self.entries.items() if expires <= now]
        for key in stale:
            del self.entries[key]
        return stale

    def sweep(self, now: float, rows: int) -> list[str]:
        return self.cleanup(now)  # at most max_items entries: bounded already

    def close(self) -> None:
        return None  # nothing to release: the entries go with the process

    def stats(self) -> StoreStats:
        return StoreStats(items=len(self.entries), evictions=self.evictions)


# A database up to this size has its entries counted on the caller's thread by `asnapshot` (~0.05 ms at 1 MiB,
# some 8k small entries): below it, the hop to a thread and a connection of its own (~0.4 ms of CPU) cost
# more than the count; above it, the count (33 ms at 300k entries) must not hold up an event loop.
COUNT_IN_PLACE_BYTES = 1 << 20

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires REAL NOT NULL,
    compressed INTEGER NOT NULL
) WITHOUT ROWID
""",
    # No index on `expires`: keeping one doubled the pages a write commits (+12-14 µs a write
    # here). The periodic sweep walks the key order in bounded steps instead (see `sweep`), so
    # its cost per write does not grow with the table. Files made with the index lose it.
    "DROP INDEX IF EXISTS cache_expires",
)


# Rows written between two checkpoints of the write-ahead log, which a thread of the store's
# own runs (see _Checkpointer). A small entry adds at most one page to the log (its table
# leaf): ~500 pages a checkpoint, half SQLite's default interval.
CHECKPOINT_EVERY = 512
# On an event loop, writes wait at most this long to be committed together (see the module)...
WRITE_GROUP_SECONDS = 0.05
# ...or until this many are waiting: a group's commit (~0.3 ms) stays short of holding up the loop.
WRITE_GROUP_ROWS = 64
# The writer's own autocheckpoint, a backstop. A checkpoint that runs beside a writer copies
# what was committed when it began, and the log starts over only once all of it is copied:
# with writes spaced out (a cache's writes follow slow calls) that is at the next write, but
# a burst of back-to-back writes keeps the log growing until the writer checkpoints the rest
# itself (little is left to copy then, but its fsyncs stall one write), at this many pages
# (16 MB at 4 KB a page). It also bounds the log should the thread fail.
BACKSTOP_CHECKPOINT_PAGES = 4_000


class _Checkpointer:
    """Copies a write-ahead log into its database from a thread of its own, on request.

    A checkpoint is the fsync-bound part of writing to SQLite in WAL mode: run by the
    writer (SQLite's autocheckpoint), one commit in ~500 stalls for milliseconds (10-20 %
    of a write's mean cost on a 2-core VM, and most of its p99). From here it overlaps the
    writes instead (PASSIVE: it never blocks a writer or a reader, and whatever it cannot
    copy now is copied next time).
    Durability is the same either way: a commit is in the log when it returns, and a
    checkpoint only moves committed pages. Each checkpoint opens the file afresh (read-
    write, never creating it), so a file moved aside and recreated is the one checkpointed.
    The thread starts on the first request and ends with `close`.
    """

    def __init__(self, path: Path) -> None:
        # Read-write, never create: a file gone (moved aside, deleted) is not checkpointed into existence.
        self._uri = f"file:{quote(os.fspath(path.absolute()))}?mode=rw"
        self._wanted = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # completed, since the store was made
        self.failures = 0

    def request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"checkpoint {self._uri}", daemon=True)
            self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._closing:
                return
            try:
                db = sqlite3.connect(self._uri, uri=True, isolation_level=None, timeout=0)
                try:
                    db.execute("PRAGMA synchronous=NORMAL")
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    db.close()
            except sqlite3.Error as exc:
                # The writer meets the same disk and reports it (see the module); a log that is
                # not checkpointed here is by the writer's backstop autocheckpoint.
                self.failures += 1
                logger.debug("checkpoint of %s failed: %s", self._uri, exc)
            else:
                self.checkpoints += 1

    def close(self, timeout: float = 10.0) -> None:
        """Ends the thread after the checkpoint it is running, if any."""
        if self._thread is not None:
            self._closing = True
            self._wanted.set()
            self._thread.join(timeout)
            self._thread = None


class SQLiteCacheStore:
    """Encoded entries in a SQLite file at `path` (WAL), created 0600, shared by every process
    that opens it. After a disk error that is not corruption, the disk is left alone for
    `retry_after` seconds, then tried again by the next operation. Every CHECKPOINT_EVERY
    writes, the log is checkpointed by a thread of the store's own (see _Checkpointer).
    On an event loop, `set`s are grouped into one commit (see the module): `flush` commits
    them now, as `close`, `cleanup`, `sweep`, `stats` and `database_bytes` do first; `get`
    answers them, `delete` and `clear` drop them (`count_items`, on its own connection,
    counts only what is committed).
    """

    def __init__(self, path: str | os.PathLike[str], *, retry_after: float = 5.0) -> None:
        self.path = Path(path)
        self.retry_after = retry_after
        self._db: sqlite3.Connection | None = None
        self.disk_error: str | None = None  # the last disk failure, while it lasts
        self._retry_at = 0.0
        self.recoveries = self.disk_errors = 0
        self._writes = 0
        self._swept_to = ""  # the last key the periodic sweep has looked at ("": none, start over)
        self._checkpointer = _Checkpointer(self.path)
        # The writes waiting to be committed together, as rows of the table, by key: the last one counts.
        self._grouped: dict[str, tuple[str, bytes, float, int]] = {}
        self._group_timer: asyncio.TimerHandle | None = None
        self._group_loop: asyncio.AbstractEventLoop | None = None  # the loop that timer runs on
        self._connect()

    # -- the file -------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        prepare_private(self.path)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")  # the thread checkpoints
            for statement in _SCHEMA:
                db.execute(statement)
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

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Runs one statement; a failure is handled (see the module), not raised."""
        return self._attempt(lambda db: db.execute(sql, params).fetchall())

    def _attempt(self, operation: Callable[[sqlite3.Connection], list[Any]]) -> list[Any]:
        """`operation` on the connection (reconnecting first when a retry is due); its rows, or []
        when the file cannot be used. Only errors of the file or the disk are handled: a
        constraint or programming error is a bug of the caller and is raised."""
        if self._db is None or self.disk_error is not None:
            if self.disk_error is None or time.monotonic() < self._retry_at:
                return []  # closed, or not yet time to retry
            if self._db is None:
                self._connect()
                if self._db is None:
                    return []
        try:
            rows = operation(self._db)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.Error as exc:
            self._failed(exc)
            return []
        if self.disk_error is not None:
            logger.warning("cache file %s works again", self.path)
            self.disk_error = None
        return rows

    # -- the store ------------------------------------------------------------------

    def get(self, key: str) -> tuple[Encoded, float] | None:
        grouped = self._grouped.get(key)
        if grouped is not None:  # written, not yet committed
            _, data, expires, compressed = grouped
            return _encoded((data, compressed)), expires
        rows = self._run("SELECT value, expires, compressed FROM cache WHERE key = ?", (key,))
        if not rows:
            return None
        data, expires, compressed = rows[0]
        if not isinstance(expires, (int, float)):  # written by something else: never live
            expires = -math.inf
        return _encoded((data, compressed)), expires

    def _wrote(self, rows: int = 1) -> None:
        """Counts written rows; every CHECKPOINT_EVERY of them, asks the thread for a checkpoint."""
        before, self._writes = self._writes, self._writes + rows
        if before // CHECKPOINT_EVERY != self._writes // CHECKPOINT_EVERY and self._db is not None:
            self._checkpointer.request()

    def set(self, key: str, value: Encoded, expires: float) -> None:
        data, compressed = value
        if math.isnan(expires):  # SQLite would store NULL, refused by the table: refused here, to the caller
            raise ValueError(f"cache entry {key!r}: expires is NaN")
        self._grouped[key] = (key, data, expires, compressed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop: the write is committed before returning
            self.flush()
            return
        if len(self._grouped) >= WRITE_GROUP_ROWS or (self._group_timer is not None and self._group_loop is not loop):
            self.flush()  # a full group; or one timed on a loop that has stopped (or another's)
        elif self._group_timer is None:  # the first write of a group
            self._group_timer = loop.call_later(WRITE_GROUP_SECONDS, self.flush)
            self._group_loop = loop
            _WAITING.add(self)  # committed at the process's exit, should nothing else commit them first

    def flush(self) -> None:
        """Commits the grouped writes, in one transaction (on a disk error they are lost, as a
        write of their own would be: the cache goes on from memory)."""
        if self._group_timer is not None:
            self._group_timer.cancel()
            self._group_timer = None
        if not self._grouped:
            return
        rows = list(self._grouped.values())
        self._grouped.clear()
        _WAITING.discard(self)
        self._attempt(partial(_commit_rows, rows))
        self._wrote(len(rows))

    def delete(self, key: str) -> bool:
        grouped = self._grouped.pop(key, None)
        removed = bool(self._run("DELETE FROM cache WHERE key = ? RETURNING key", (key,)))
        self._wrote()
        return removed or grouped is not None

    def clear(self) -> None:
        self._grouped.clear()
        self._run("DELETE FROM cache")
        self._wrote()

    def cleanup(self, now: float) -> list[str]:
        self.flush()
        removed = [key for (key,) in self._run("DELETE FROM cache WHERE expires <= ? RETURNING key", (now,))]
        self._wrote()
        return removed

    def sweep(self, now: float, rows: int) -> list[str]:
        """Reads `rows` keys on from where the last sweep stopped (by the primary key: no scan of
        the table) and removes the expired ones among them."""
        self.flush()
        window = self._run("SELECT max(key), count(*) FROM (SELECT key FROM cache WHERE key > ? ORDER BY key LIMIT ?)",
                           (self._swept_to, rows))
        if not window or window[0][1] == 0:
            self._swept_to = ""  # past the end (or no disk): the next sweep starts over
            return []
        last, seen = window[0]
        removed = [key for (key,) in self._run(
            "DELETE FROM cache WHERE key > ? AND key <= ? AND expires <= ? RETURNING key", (self._swept_to, last, now))]
        self._wrote()
        self._swept_to = "" if seen < rows else last
        return removed

    def close(self) -> None:
        """Commits what is grouped, checkpoints the write-ahead log into the database file and closes it."""
        try:
            self.flush()
        finally:
            self._close_file()

    def _close_file(self) -> None:
        self._checkpointer.close()  # first: the final checkpoint needs the log to itself
        if self._db is not None:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                logger.warning("cache file %s: checkpoint on close failed (%s)", self.path, exc)
            self._db.close()
            self._db = None

    def database_bytes(self) -> int:
        """The database's size as its readers see it, pages in the write-ahead log included (not the log's
        file, which keeps its size after a checkpoint): what a count has to read at most."""
        self.flush()
        rows = self._run("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
        return int(rows[0][0]) if rows else 0

    def count_items(self) -> int | None:
        """The entries in the file, counted on a connection of this call's own (None when the file
        cannot be read): safe in any thread, so a caller on an event loop can count in another one
        (the count reads the whole key index: 33 ms at 300k entries) while the loop goes on with
        the store's own connection."""
        try:
            db = sqlite3.connect(f"file:{quote(os.fsencode(self.path.absolute()))}?mode=ro", uri=True,
                                 check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            return int(db.execute("SELECT count(*) FROM cache").fetchone()[0])
        except sqlite3.Error:
            return None
        finally:
            db.close()

    def stats(self, count: bool = True) -> StoreStats:
        """What the store reports; without `count`, `items` is 0 rather than read (see count_items)."""
        # First, as any operation: a store in error whose retry is due reconnects here (what lets /ready,
        # which asks without counting, see the disk work again with no request touching the cache).
        self.flush()
        counted = self._run("SELECT count(*) FROM cache") if count else self._run("SELECT 0 FROM cache LIMIT 1")
        size = 0
        if self._db is not None:
            for name in (str(self.path), f"{self.path}-wal"):
                try:
                    size += os.path.getsize(name)
                except OSError:
                    pass
        return StoreStats(
            items=counted[0][0] if counted and count else 0, bytes=size,
            persistent=self._db is not None and self.disk_error is None,
            error=self.disk_error, errors=self.disk_errors, recoveries=self.recoveries,
        )


# The stores with writes waiting to be committed: at the process's exit, they are (a loop that
# has ended leaves its group's timer unrun; a store closed, or collected, is not held here).
_WAITING: weakref.WeakSet[SQLiteCacheStore] = weakref.WeakSet()


@atexit.register
def _commit_waiting() -> None:
    for store in list(_WAITING):
        store.flush()


def _commit_rows(rows: list[tuple[str, bytes, float, int]], db: sqlite3.Connection) -> list[Any]:
    """Writes `rows` to the table in one transaction, or (failing) none of them."""
    if db.in_transaction:  # left open by a group whose ROLLBACK failed too
        db.execute("ROLLBACK")
    try:
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:  # the connection is in trouble already: the first error says why
                pass
        raise
    return []


# -- the policy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """A PersistentCache's counters and sizes at one moment; `stats()` is its JSON.

    Counters (since the cache was made): memory_hits, disk_hits (hits of the shared
    store, whatever it is), misses, writes, evictions (from memory), expirations,
    undecodable, and the shared store's disk_errors and recoveries. Gauges: memory_items,
    disk_items, disk_bytes, persistent, disk_error.
    """

    memory_hits: int
    disk_hits: int
    misses: int
    writes: int
    evictions: int
    expirations: int
    undecodable: int
    memory_items: int
    max_memory_items: int
    disk_items: int
    disk_bytes: int
    ttl_seconds: float
    persistent: bool
    disk_error: str | None
    disk_errors: int
    recoveries: int

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits

    @property
    def hit_rate(self) -> float:
        lookups = self.memory_hits + self.disk_hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": self.hit_rate,
            "memoryHits": self.memory_hits,
            "diskHits": self.disk_hits,
            "writes": self.writes,
            "evictions": self.evictions,
            "expirations": self.expirations,
            "memoryItems": self.memory_items,
            "maxMemoryItems": self.max_memory_items,
            "diskItems": self.disk_items,
            "diskBytes": self.disk_bytes,
            "ttlSeconds": self.ttl_seconds,
            "persistent": self.persistent,
            "diskError": self.disk_error,
            "diskErrors": self.disk_errors,
            "recoveries": self.recoveries,
            "undecodable": self.undecodable,
        }


class PersistentCache:
    """An LRU memory layer of `max_memory_items` over a shared store.

    The shared store is `store`, or a SQLiteCacheStore at `path` (trying its disk again
    `retry_after` seconds after a failure), or none at all when both are None (nothing
    survives a restart). `ttl` is the default time to live in seconds; `set` may give
    another per entry. Every `cleanup_every` writes, expired entries are swept from both
    layers, in bounded steps over the shared store (2 * `cleanup_every` entries a sweep, so that
    it removes expired entries faster than writes add them). `clock` returns epoch seconds,
    because expiry times outlive the process.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: CacheStore[Encoded] | None = None,
        ttl: float = 300.0,
        max_memory_items: int = 1000,
        compress_threshold: int = 1024,
        cleanup_every: int = 1000,
        retry_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < ttl < math.inf:
            raise ValueError(f"ttl must be a finite number > 0, got {ttl}")
        if max_memory_items < 1:
            raise ValueError(f"max_memory_items must be at least 1, got {max_memory_items}")
        if store is not None and (path is not None or retry_after is not None):
            raise ValueError("give either a store or a path (and its retry_after), not both")
        self.ttl = ttl
        self.max_memory_items = max_memory_items
        self.compress_threshold = compress_threshold
        self.cleanup_every = cleanup_every
        self._clock = clock
        self._memory = MemoryCacheStore(max_memory_items)
        # Read directly by `get`: a memory hit is the hot path, and a call costs a third of it.
        self._entries = self._memory.entries
        if store is None and path is not None:
            store = SQLiteCacheStore(path, retry_after=5.0 if retry_after is None else retry_after)
        self._shared = store
        # A store over the network is asked in `aget` and written in `aset`, awaited (see SharedCacheStore).
        self._remote = store if isinstance(store, SharedCacheStore) else None
        self.path = store.path if isinstance(store, SQLiteCacheStore) else None
        self.misses = self.memory_hits = self.disk_hits = 0
        self.writes = self.expirations = self.undecodable = 0

    @property
    def store(self) -> CacheStore[Encoded] | None:
        """The shared store under the memory layer (None: memory only)."""
        return self._shared

    @property
    def remote(self) -> bool:
        """Whether the shared store is reached over the network: use `aget` and `aset`."""
        return self._remote is not None

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits

    def _encode(self, value: Any) -> Encoded:
        data = _to_json(value).encode()
        if len(data) > self.compress_threshold:
            return _encoded((zlib.compress(data, 1), 1))
        return _encoded((data, 0))

    @staticmethod
    def _decode(encoded: Encoded) -> Any:
        data, compressed = encoded
        return json.loads(zlib.decompress(data) if compressed else data)

    # -- public API ---------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The live value under `key`, or `default`. The memory copy is returned as is."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry[1] > self._clock():
                self._entries.move_to_end(key)
                self.memory_hits += 1
                return entry[0]
            self._expire(key)
        elif self._shared is not None:
            value = self._get_shared(key)
            if value is not _MISSING:
                return value
        self.misses += 1
        return default

    def _get_shared(self, key: str) -> Any:
        assert self._shared is not None
        return self._admit(key, self._shared.get(key))

    def _admit(self, key: str, found: tuple[Encoded, float] | None) -> Any:
        """What the shared store found under `key`, decoded and kept in memory; _MISSING when it
        found nothing, or something expired or undecodable (deleted then)."""
        assert self._shared is not None
        if found is None:
            return _MISSING
        encoded, expires = found
        if expires <= self._clock():
            self._expire(key)
            return _MISSING
        try:
            value = self._decode(encoded)
        except (zlib.error, ValueError, TypeError) as exc:  # written by something else, or damaged
            self.undecodable += 1
            where = f"cache file {self.path}" if self.path is not None else f"cache store {self._shared!r}"
            logger.warning("%s: the entry %r cannot be decoded (%s); dropped it", where, key, exc)
            self._shared.delete(key)
            return _MISSING
        self._memory.set(key, value, expires)
        self.disk_hits += 1
        return value

    def _expire(self, key: str) -> None:
        self._memory.delete(key)
        # A shared store over the network expires its entries itself; a delete from here could
        # remove what another replica has just written under the key (or one this clock thinks old).
        if self._shared is not None and self._remote is None:
            self._shared.delete(key)
        self.expirations += 1

    async def aget(self, key: str, default: Any = None) -> Any:
        """`get`; over a SharedCacheStore, what memory does not hold is asked of the store (one round trip)."""
        remote = self._remote
        entry = self._entries.get(key)
        if remote is None or (entry is not None and entry[1] > self._clock()):
            return self.get(key, default)  # memory answers: a hit (or, over a local store, everything)
        if entry is not None:  # expired here, but another replica may have written it afresh: asked below
            self._expire(key)
        value = self._admit(key, await remote.fetch(key))
        if value is _MISSING:
            self.misses += 1
            return default
        return value

    async def aset(self, key: str, value: Any, ttl: float | None = None) -> None:
        """`set`; over a SharedCacheStore, written there (one round trip) before returning."""
        remote = self._remote
        if remote is None:
            self.set(key, value, ttl)
            return
        expires = self._expiry(ttl)
        encoded = self._encode(value)
        self._remember(key, value, expires)
        await remote.put(key, encoded, expires)

    def _expiry(self, ttl: float | None) -> float:
        ttl = self.ttl if ttl is None else ttl
        if not 0 < ttl < math.inf:  # NaN fails this too
            raise ValueError(f"ttl must be a finite number > 0, got {ttl}")
        return self._clock() + ttl

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Stores `value` (JSON-serialisable) for `ttl` seconds, handing it to the shared store before
        returning (a SQLite file commits it with others on an event loop, see the module; a
        SharedCacheStore's write is sent in the background: `aset` waits for it)."""
        expires = self._expiry(ttl)
        if self._shared is not None:
            self._shared.set(key, self._encode(value), expires)
        else:
            _to_json(value)  # the same contract with or without a shared store
        self._remember(key, value, expires)

    def _remember(self, key: str, value: Any, expires: float) -> None:
        """A write's memory copy and count, `set`'s and `aset`'s alike; every `cleanup_every`, a sweep."""
        self._memory.set(key, value, expires)
        self.writes += 1
        if self.writes % self.cleanup_every == 0:
            self._remove_expired(full=False)  # entries nobody reads again would otherwise stay stored for good

    def delete(self, key: str) -> bool:
        """Removes `key` from both layers; True if it was there."""
        in_memory = self._memory.delete(key)
        shared = self._shared is not None and self._shared.delete(key)
        return in_memory or shared

    def clear(self) -> None:
        """Removes every entry from both layers."""
        self._memory.clear()
        if self._shared is not None:
            self._shared.clear()

    def cleanup(self) -> int:
        """Removes expired entries from both layers; returns how many were removed."""
        return self._remove_expired(full=True)

    def _remove_expired(self, full: bool) -> int:
        """Memory's expired entries, and the shared store's: all of them, or (not `full`) one step."""
        now = self._clock()
        removed = set(self._memory.cleanup(now))
        if self._shared is not None:
            shared = self._shared
            removed.update(shared.cleanup(now) if full else shared.sweep(now, 2 * self.cleanup_every))
        self.expirations += len(removed)
        return len(removed)

    def close(self) -> None:
        """Closes the shared store (SQLite: checkpoints its write-ahead log into the file)."""
        if self._shared is not None:
            self._shared.close()

    def __enter__(self) -> PersistentCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def snapshot(self) -> CacheSnapshot:
        """The counters and sizes now (asks the shared store for its own)."""
        shared = self._shared.stats() if self._shared is not None else StoreStats(items=0)
        return self._snapshot(shared, shared.items)

    async def asnapshot(self) -> CacheSnapshot:
        """`snapshot()` for a caller on an event loop: a SQLite file's entries are counted in a
        thread, on a connection of their own, so that a scrape of a large cache does not hold up
        the requests served meanwhile."""
        shared = self._shared
        if not isinstance(shared, SQLiteCacheStore):  # memory and Redis report their size at no cost
            return self.snapshot()
        if shared.database_bytes() <= COUNT_IN_PLACE_BYTES:  # counted at once: cheaper than the hop to a thread
            return self.snapshot()
        stats = shared.stats(count=False)
        items = await asyncio.to_thread(shared.count_items)
        return self._snapshot(stats, items if items is not None and stats.persistent else 0)

    def shared_state(self) -> StoreStats:
        """Whether the shared store works now, and why not (what /ready asks), its entries not counted."""
        shared = self._shared
        if shared is None:
            return StoreStats(items=0)
        return shared.stats(count=False) if isinstance(shared, SQLiteCacheStore) else shared.stats()

    def _snapshot(self, shared: StoreStats, shared_items: int) -> CacheSnapshot:
        memory = self._memory.stats()
        return CacheSnapshot(
            memory_hits=self.memory_hits, disk_hits=self.disk_hits, misses=self.misses, writes=self.writes,
            evictions=memory.evictions, expirations=self.expirations, undecodable=self.undecodable,
            memory_items=memory.items, max_memory_items=self.max_memory_items,
            disk_items=shared_items, disk_bytes=shared.bytes, ttl_seconds=self.ttl,
            persistent=shared.persistent, disk_error=shared.error, disk_errors=shared.errors,
            recoveries=shared.recoveries,
        )

    def stats(self) -> dict[str, Any]:
        """The snapshot as plain numbers."""
        return self.snapshot().to_dict()
