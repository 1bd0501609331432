"""An async pool of reusable connections with FIFO waiters, health checks and idle shrink.

    pool = ConnectionPool(sqlite_connector("ledger.db"), min_size=1, max_size=4,
                          health_check=sqlite_is_healthy, close=sqlite_close)
    await pool.open()
    async with pool.acquire(timeout=2.0) as db:
        db.execute("SELECT 1")                 # quick work, on the event loop
    rows = await pool.run(lambda db: db.execute("SELECT * FROM spend").fetchall())   # in a thread
    await pool.close()
    pool.snapshot().wait.count                 # acquires so far; stats() is the snapshot's JSON

A released connection goes straight to the longest-waiting caller. A connection taken
from the idle set is health-checked first and replaced when broken, and one returned by a
block that raised is checked before it is reused. Connections idle for longer than
`idle_timeout` beyond `min_size` are closed lazily on the next acquire or release, so
the pool needs no background task. Every acquire's wait is kept in a latency histogram.
Its errors are PoolErrors (ResilienceErrors): PoolTimeoutError (also a TimeoutError) and
PoolClosedError.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from tooloo_cli.resilience.errors import ResilienceError
from tooloo_cli.resilience.histogram import Histogram, LatencyBuckets
from tooloo_cli.resilience.sqlite_files import prepare_private

logger = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")


class PoolError(ResilienceError):
    """Base of the pool's errors."""


class PoolTimeoutError(PoolError, TimeoutError):
    """No connection became free within the acquire timeout."""


class PoolClosedError(PoolError):
    """The pool was closed (before or while waiting)."""


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """A ConnectionPool's gauges and counters at one moment; `stats()` is its JSON.

    Gauges: size (connections alive or being made), idle, in_use, waiting, closed.
    Counters since the pool was made: created, destroyed, acquired, timeouts,
    health_check_failures, waits (acquires that queued for a connection). `wait` is the
    histogram of every successful acquire's wait, in seconds.
    """

    name: str
    size: int
    idle: int
    in_use: int
    waiting: int
    min_size: int
    max_size: int
    created: int
    destroyed: int
    acquired: int
    timeouts: int
    health_check_failures: int
    waits: int
    wait: Histogram
    closed: bool

    @property
    def avg_wait_ms(self) -> float:
        return self.wait.sum / self.acquired * 1000 if self.acquired else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "idle": self.idle,
            "inUse": self.in_use,
            "waiting": self.waiting,
            "minSize": self.min_size,
            "maxSize": self.max_size,
            "created": self.created,
            "destroyed": self.destroyed,
            "acquired": self.acquired,
            "timeouts": self.timeouts,
            "healthCheckFailures": self.health_check_failures,
            "avgWaitMs": self.avg_wait_ms,
            "closed": self.closed,
        }


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _handed_over(waiter: asyncio.Future[Any]) -> bool:
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


class ConnectionPool(Generic[C]):
    """Between `min_size` and `max_size` connections made by `factory`.

    `factory`, `health_check` and `close` may each be sync or async.
    """

    def __init__(
        self,
        factory: Callable[[], C | Awaitable[C]],
        *,
        min_size: int = 1,
        max_size: int = 10,
        acquire_timeout: float = 5.0,
        idle_timeout: float = 60.0,
        health_check: Callable[[C], bool | Awaitable[bool]] | None = None,
        close: Callable[[C], Any] | None = None,
        name: str = "pool",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError(f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}..{max_size}")
        if acquire_timeout <= 0:
            raise ValueError(f"acquire_timeout must be > 0, got {acquire_timeout}")
        self.name = name
        self.min_size = min_size
        self.max_size = max_size
        self.acquire_timeout = acquire_timeout
        self.idle_timeout = idle_timeout
        self._factory = factory
        self._health_check = health_check
        self._close_connection = close
        self._clock = clock
        self._idle: deque[tuple[C, float]] = deque()  # (connection, idle since); newest on the right
        self._waiters: deque[asyncio.Future[C]] = deque()
        self._size = 0  # connections alive or being created
        self._closed = False
        self.created = self.destroyed = self.acquired = self.timeouts = 0
        self.health_check_failures = self.waits = 0
        self._wait = LatencyBuckets()

    async def open(self) -> None:
        """Creates the `min_size` connections up front."""
        while self._size < self.min_size:
            self._size += 1
            try:
                connection = await self._create()
            except BaseException:
                self._size -= 1
                raise
            self._idle.append((connection, self._clock()))

    async def _create(self) -> C:
        connection = await _maybe_await(self._factory())
        self.created += 1
        return connection

    async def _destroy(self, connection: C) -> None:
        self._size -= 1
        self.destroyed += 1
        if self._close_connection is not None:
            try:
                await _maybe_await(self._close_connection(connection))
            except Exception as exc:  # a broken connection may fail to close; it is gone either way
                logger.warning("%s: closing a connection failed: %s", self.name, exc)

    async def _healthy(self, connection: C) -> bool:
        if self._health_check is None:
            return True
        try:
            healthy = bool(await _maybe_await(self._health_check(connection)))
        except Exception:
            healthy = False
        if not healthy:
            self.health_check_failures += 1
        return healthy

    async def _shrink(self) -> None:
        """Closes connections idle too long, oldest first, down to `min_size`."""
        cutoff = self._clock() - self.idle_timeout
        while self._idle and self._size > self.min_size and self._idle[0][1] <= cutoff:
            connection, _ = self._idle.popleft()
            await self._destroy(connection)

    async def _take(self, timeout: float) -> C:
        if self._closed:
            raise PoolClosedError(f"{self.name} is closed")
        await self._shrink()
        while self._idle:
            connection, _ = self._idle.pop()
            if await self._healthy(connection):
                return connection
            await self._destroy(connection)
        if self._size < self.max_size:
            self._size += 1
            try:
                return await self._create()
            except BaseException:
                self._size -= 1
                raise
        waiter: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waits += 1
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            if _handed_over(waiter):  # the connection arrived as the time ran out
                return waiter.result()
            self.timeouts += 1
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise PoolTimeoutError(
                f"{self.name}: no connection free within {timeout}s "
                f"({self.in_use}/{self.max_size} in use, {len(self._waiters)} waiting)"
            ) from None
        except asyncio.CancelledError:
            if _handed_over(waiter):
                self._hand_over(waiter.result())
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _hand_over(self, connection: C) -> None:
        """Gives a healthy connection to the longest waiter, or to the idle set."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self._idle.append((connection, self._clock()))

    async def _give_back(self, connection: C, suspect: bool) -> None:
        if self._closed or (suspect and not await self._healthy(connection)):
            await self._destroy(connection)
            if not self._closed:
                await self._serve_waiter_with_new()
            return
        self._hand_over(connection)
        await self._shrink()

    async def _serve_waiter_with_new(self) -> None:
        """Replaces a destroyed connection for the waiters, if anyone waits."""
        if not self._waiters or self._size >= self.max_size:
            return
        self._size += 1
        try:
            connection = await self._create()
        except Exception as exc:
            self._size -= 1
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
                    break
            return
        # The waiter may have given up while the connection was being made: then it goes
        # to the next one, or to the idle set, instead of being lost.
        self._hand_over(connection)

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[C]:
        """A connection for the duration of the block; PoolTimeoutError after `timeout` s."""
        started = self._clock()
        connection = await self._take(self.acquire_timeout if timeout is None else timeout)
        self.acquired += 1
        self._wait.observe(self._clock() - started)
        suspect = False
        try:
            yield connection
        except BaseException:
            suspect = True
            raise
        finally:
            await self._give_back(connection, suspect)

    async def run(self, fn: Callable[..., R], *args: Any, timeout: float | None = None) -> R:
        """`fn(connection, *args)` in a worker thread on a pooled connection.

        The connection goes back only once the thread is done with it, even when the
        caller is cancelled meanwhile (a blocking driver call cannot be interrupted).
        """
        async with self.acquire(timeout) as connection:
            work = asyncio.ensure_future(asyncio.to_thread(fn, connection, *args))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                raise

    @property
    def in_use(self) -> int:
        return self._size - len(self._idle)

    async def close(self) -> None:
        """Fails every waiter, closes idle connections now and busy ones when released."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError(f"{self.name} was closed while waiting"))
        while self._idle:
            connection, _ = self._idle.popleft()
            await self._destroy(connection)

    def snapshot(self) -> PoolSnapshot:
        """The gauges, counters and wait histogram now."""
        return PoolSnapshot(
            name=self.name, size=self._size, idle=len(self._idle), in_use=self.in_use,
            waiting=len(self._waiters), min_size=self.min_size, max_size=self.max_size,
            created=self.created, destroyed=self.destroyed, acquired=self.acquired, timeouts=self.timeouts,
            health_check_failures=self.health_check_failures, waits=self.waits, wait=self._wait.snapshot(),
            closed=self._closed,
        )

    def stats(self) -> dict[str, Any]:
        """The snapshot as plain numbers."""
        return self.snapshot().to_dict()


def sqlite_connector(path: str | Path, *, synchronous: str = "NORMAL") -> Callable[[], sqlite3.Connection]:
    """A factory of SQLite connections in WAL mode, usable from worker threads; the file is 0600.

    `synchronous` is SQLite's: NORMAL survives the process dying (kill -9) at each commit,
    FULL also a power cut, at the cost of an fsync per commit.
    """
    if synchronous not in ("NORMAL", "FULL"):
        raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
    path = Path(path)

    def connect() -> sqlite3.Connection:
        prepare_private(path)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        return db

    return connect


def sqlite_is_healthy(db: sqlite3.Connection) -> bool:
    """Whether the connection still answers a trivial query."""
    try:
        return db.execute("SELECT 1").fetchone() == (1,)
    except sqlite3.Error:
        return False


def sqlite_close(db: sqlite3.Connection) -> None:
    db.close()
