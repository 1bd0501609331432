"""ConnectionPool: sizing, FIFO waiters, health checks, idle shrink, close and cancellation."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tooloo_cli.resilience import ResilienceError
from tooloo_cli.resilience.pool import (
    ConnectionPool,
    PoolClosedError,
    PoolError,
    PoolTimeoutError,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)
from tooloo_cli.phase6.support import ManualClock, run

# -- helpers ------------------------------------------------------------------------------


class FakeConnection:
    """A connection the test controls: it can be marked broken or made to explode on checks."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.broken = False
        self.explode = False
        self.closed = False

    def __repr__(self) -> str:
        return f"FakeConnection({self.number}{', broken' if self.broken else ''}{', closed' if self.closed else ''})"


class FakeBackend:
    """Factory, health check and close for FakeConnection, sync or async, with an optional gate on creation."""

    def __init__(self, *, use_async: bool = False) -> None:
        self.use_async = use_async
        self.made: list[FakeConnection] = []
        self.gate: asyncio.Event | None = None  # when set, creation waits for it
        self.creating = 0  # how many creations are parked at the gate

    def _make(self) -> FakeConnection:
        connection = FakeConnection(len(self.made))
        self.made.append(connection)
        return connection

    def _is_healthy(self, connection: FakeConnection) -> bool:
        if connection.explode:
            raise RuntimeError("health check blew up")
        return not connection.broken and not connection.closed

    def _close(self, connection: FakeConnection) -> None:
        assert not connection.closed, f"{connection!r} closed twice"
        connection.closed = True

    async def _make_async(self) -> FakeConnection:
        if self.gate is not None:
            self.creating += 1
            try:
                await self.gate.wait()
            finally:
                self.creating -= 1
        await asyncio.sleep(0)
        return self._make()

    async def _is_healthy_async(self, connection: FakeConnection) -> bool:
        await asyncio.sleep(0)
        return self._is_healthy(connection)

    async def _close_async(self, connection: FakeConnection) -> None:
        await asyncio.sleep(0)
        self._close(connection)

    @property
    def factory(self) -> Callable[[], Any]:
        return self._make_async if self.use_async or self.gate is not None else self._make

    @property
    def health_check(self) -> Callable[[FakeConnection], Any]:
        return self._is_healthy_async if self.use_async else self._is_healthy

    @property
    def close(self) -> Callable[[FakeConnection], Any]:
        return self._close_async if self.use_async else self._close

    def pool(self, **options: Any) -> ConnectionPool[FakeConnection]:
        """A pool over this backend; keyword options override the defaults."""
        return ConnectionPool(
            lambda: self.factory(), health_check=lambda c: self.health_check(c), close=lambda c: self.close(c), **options
        )

    @property
    def open_connections(self) -> list[FakeConnection]:
        return [c for c in self.made if not c.closed]


async def settle(rounds: int = 5) -> None:
    """Lets other tasks run a few steps without any real waiting."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_until(predicate: Callable[[], bool], limit: int = 1000) -> None:
    """Yields to the loop until `predicate()` holds (bounded so a bug fails instead of hanging)."""
    for _ in range(limit):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


def assert_consistent(pool: ConnectionPool[Any], backend: FakeBackend | None = None) -> None:
    """Checks the pool's bookkeeping agrees with itself (and with the backend's live connections)."""
    stats = pool.stats()
    assert stats["size"] == stats["idle"] + stats["inUse"]
    assert stats["size"] >= 0 and stats["idle"] >= 0 and stats["inUse"] >= 0
    assert stats["created"] - stats["destroyed"] == stats["size"]
    if backend is not None:
        assert len(backend.open_connections) == stats["size"], (backend.made, stats)


class Boom(Exception):
    """An error raised inside an acquire block."""


def sqlite_pool(path: Path, **options: Any) -> ConnectionPool[sqlite3.Connection]:
    """A pool of real SQLite connections over `path`."""
    return ConnectionPool(sqlite_connector(path), health_check=sqlite_is_healthy, close=sqlite_close, **options)


# -- construction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"min_size": 3, "max_size": 2}, "min_size"),
        ({"min_size": -1, "max_size": 2}, "min_size"),
        ({"min_size": 0, "max_size": 0}, "max_size"),
        ({"acquire_timeout": 0}, "acquire_timeout"),
        ({"acquire_timeout": -1.0}, "acquire_timeout"),
    ],
)
def test_invalid_sizes_and_timeouts_are_rejected(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ConnectionPool(object, **options)


def test_min_size_equal_to_max_size_is_allowed() -> None:
    pool = ConnectionPool(object, min_size=2, max_size=2)
    assert pool.stats()["minSize"] == pool.stats()["maxSize"] == 2


def test_error_hierarchy() -> None:
    assert issubclass(PoolTimeoutError, PoolError) and issubclass(PoolTimeoutError, TimeoutError)
    assert issubclass(PoolClosedError, PoolError)
    assert issubclass(PoolError, ResilienceError)


def test_the_errors_a_pool_raises_are_resilience_errors() -> None:
    async def scenario() -> list[BaseException]:
        pool = ConnectionPool(object, min_size=0, max_size=1)
        raised = []
        async with pool.acquire():
            try:
                async with pool.acquire(timeout=0.01):
                    pass
            except PoolTimeoutError as exc:
                raised.append(exc)
        await pool.close()
        try:
            async with pool.acquire():
                pass
        except PoolClosedError as exc:
            raised.append(exc)
        return raised

    timed_out, closed = run(scenario())
    assert isinstance(timed_out, ResilienceError) and isinstance(timed_out, TimeoutError)
    assert isinstance(closed, ResilienceError) and isinstance(closed, PoolError)


# -- open and growth ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync-callbacks", "async-callbacks"])
def test_open_creates_min_size_idle_connections(use_async: bool) -> None:
    async def scenario() -> None:
        backend = FakeBackend(use_async=use_async)
        pool = backend.pool(min_size=3, max_size=5)
        assert pool.stats()["size"] == 0
        await pool.open()
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["inUse"], stats["created"]) == (3, 3, 0, 3)
        assert len(backend.made) == 3
        await pool.open()  # idempotent: already at min_size
        assert pool.stats()["created"] == 3
        assert_consistent(pool, backend)
        await pool.close()

    run(scenario())


def test_open_with_real_sqlite_creates_min_size_working_connections(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=2, max_size=4)
        await pool.open()
        assert pool.stats()["size"] == 2 and pool.stats()["idle"] == 2
        async with pool.acquire() as db:
            assert sqlite_is_healthy(db)
            assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        await pool.close()

    run(scenario())


def test_a_failing_factory_during_open_leaves_the_size_accurate() -> None:
    async def scenario() -> None:
        made: list[int] = []

        def factory() -> int:
            if len(made) == 1:
                raise OSError("cannot connect")
            made.append(1)
            return len(made)

        pool = ConnectionPool(factory, min_size=3, max_size=3)
        with pytest.raises(OSError):
            await pool.open()
        assert pool.stats()["size"] == 1 and pool.stats()["idle"] == 1 and pool.stats()["created"] == 1

    run(scenario())


def test_grows_on_demand_up_to_max_size_then_reuses() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=3)
        await pool.open()
        assert pool.stats()["size"] == 0
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            assert len({a.number, b.number, c.number}) == 3
            stats = pool.stats()
            assert (stats["size"], stats["inUse"], stats["idle"], stats["created"]) == (3, 3, 0, 3)
        for _ in range(10):
            async with pool.acquire():
                pass
        stats = pool.stats()
        assert stats["created"] == 3 and stats["acquired"] == 13 and stats["inUse"] == 0 and stats["idle"] == 3
        assert_consistent(pool, backend)

    run(scenario())


def test_real_sqlite_pool_grows_to_max_under_concurrent_use_and_shares_data(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=3)
        await pool.open()
        async with pool.acquire() as db:
            db.execute("CREATE TABLE t (n INTEGER)")
        inside = 0
        peak = 0

        async def insert(n: int) -> None:
            nonlocal inside, peak
            async with pool.acquire(timeout=5.0) as db:
                inside += 1
                peak = max(peak, inside)
                await asyncio.to_thread(db.execute, "INSERT INTO t VALUES (?)", (n,))
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(insert(n) for n in range(12)))
        stats = pool.stats()
        assert stats["size"] <= 3 and stats["created"] == 3 and peak == 3
        assert stats["acquired"] == 13 and stats["inUse"] == 0
        async with pool.acquire() as db:
            assert db.execute("SELECT COUNT(*), SUM(n) FROM t").fetchone() == (12, sum(range(12)))
        await pool.close()

    run(scenario())


# -- waiting and timeouts -------------------------------------------------------------------------


def test_acquire_beyond_max_times_out_with_a_descriptive_error() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=2, name="ledger")
        async with pool.acquire(), pool.acquire():
            with pytest.raises(PoolTimeoutError) as caught:
                async with pool.acquire(timeout=0.05):
                    raise AssertionError("must not get a connection")
            message = str(caught.value)
            assert "ledger" in message
            assert "2/2 in use" in message
            assert isinstance(caught.value, TimeoutError)
            stats = pool.stats()
            assert stats["timeouts"] == 1 and stats["waiting"] == 0 and stats["size"] == 2
        assert_consistent(pool, backend)

    run(scenario())


def test_default_acquire_timeout_applies_when_none_is_given() -> None:
    async def scenario() -> None:
        pool = ConnectionPool(object, min_size=0, max_size=1, acquire_timeout=0.03, name="tiny")
        async with pool.acquire():
            with pytest.raises(PoolTimeoutError, match="tiny"):
                async with pool.acquire():
                    pass
        assert pool.stats()["timeouts"] == 1

    run(scenario())


def test_a_waiter_receives_a_connection_released_before_its_timeout() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)
        got: list[FakeConnection] = []

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0) as connection:
                got.append(connection)

        async with pool.acquire() as held:
            task = asyncio.create_task(waiter())
            await wait_until(lambda: pool.stats()["waiting"] == 1)
        await task
        assert got == [held]
        assert pool.stats()["created"] == 1 and pool.stats()["timeouts"] == 0
        assert_consistent(pool, backend)

    run(scenario())


@pytest.mark.parametrize("use_async", [False, True], ids=["sync-callbacks", "async-callbacks"])
def test_waiters_are_served_in_fifo_order(use_async: bool) -> None:
    async def scenario() -> None:
        backend = FakeBackend(use_async=use_async)
        pool = backend.pool(min_size=0, max_size=2)
        order: list[int] = []

        async def worker(n: int) -> None:
            async with pool.acquire(timeout=5.0):
                order.append(n)
                await asyncio.sleep(0)

        first = pool.acquire()
        second = pool.acquire()
        await first.__aenter__()
        await second.__aenter__()
        tasks = []
        for n in range(8):
            tasks.append(asyncio.create_task(worker(n)))
            await wait_until(lambda: pool.stats()["waiting"] == n + 1)
        await first.__aexit__(None, None, None)
        await second.__aexit__(None, None, None)
        await asyncio.gather(*tasks)
        assert order == list(range(8))
        assert pool.stats()["created"] == 2
        assert_consistent(pool, backend)

    run(scenario())


def test_real_sqlite_waiters_are_served_in_fifo_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=1)
        await pool.open()
        order: list[int] = []

        async def worker(n: int) -> None:
            async with pool.acquire(timeout=5.0) as db:
                await asyncio.to_thread(db.execute, "SELECT 1")
                order.append(n)

        async with pool.acquire():
            tasks = []
            for n in range(5):
                tasks.append(asyncio.create_task(worker(n)))
                await wait_until(lambda: pool.stats()["waiting"] == n + 1)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        await pool.close()

    run(scenario())


# -- health checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["returns-false", "raises"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync-callbacks", "async-callbacks"])
def test_a_broken_idle_connection_is_replaced(failure: str, use_async: bool) -> None:
    async def scenario() -> None:
        backend = FakeBackend(use_async=use_async)
        pool = backend.pool(min_size=1, max_size=2)
        await pool.open()
        original = backend.made[0]
        if failure == "raises":
            original.explode = True
        else:
            original.broken = True
        async with pool.acquire() as connection:
            assert connection is not original
            assert not connection.broken
        assert original.closed
        stats = pool.stats()
        assert stats["healthCheckFailures"] == 1 and stats["destroyed"] == 1 and stats["created"] == 2
        assert stats["size"] == 1 and stats["idle"] == 1
        assert_consistent(pool, backend)

    run(scenario())


def test_a_failing_close_of_a_broken_connection_does_not_break_the_pool() -> None:
    async def scenario() -> None:
        def bad_close(connection: FakeConnection) -> None:
            raise OSError("socket already gone")

        backend = FakeBackend()
        pool = ConnectionPool(backend.factory, health_check=backend.health_check, close=bad_close, min_size=1, max_size=1)
        await pool.open()
        backend.made[0].broken = True
        async with pool.acquire() as connection:
            assert connection is backend.made[1]
        assert pool.stats()["destroyed"] == 1 and pool.stats()["size"] == 1

    run(scenario())


def test_real_sqlite_closed_idle_connection_is_detected_and_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=1)
        await pool.open()
        async with pool.acquire() as db:
            first = db
        first.close()  # broken behind the pool's back while idle
        assert not sqlite_is_healthy(first)
        async with pool.acquire() as db:
            assert db is not first
            assert sqlite_is_healthy(db)
        stats = pool.stats()
        assert stats["healthCheckFailures"] == 1 and stats["created"] == 2 and stats["destroyed"] == 1
        await pool.close()

    run(scenario())


def test_a_healthy_connection_is_not_checked_when_released_normally() -> None:
    async def scenario() -> None:
        checks: list[FakeConnection] = []
        backend = FakeBackend()

        def counting_check(connection: FakeConnection) -> bool:
            checks.append(connection)
            return backend._is_healthy(connection)

        pool = ConnectionPool(backend.factory, health_check=counting_check, min_size=0, max_size=1)
        async with pool.acquire():  # newly created: no check
            pass
        assert checks == []
        async with pool.acquire():  # from idle: checked once
            pass
        assert len(checks) == 1

    run(scenario())


def test_a_block_that_raises_with_a_broken_connection_gets_it_discarded() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)
        with pytest.raises(Boom):
            async with pool.acquire() as connection:
                connection.broken = True
                raise Boom
        assert connection.closed
        stats = pool.stats()
        assert stats["size"] == 0 and stats["destroyed"] == 1 and stats["healthCheckFailures"] == 1
        async with pool.acquire() as fresh:
            assert fresh is not connection and not fresh.closed
        assert_consistent(pool, backend)

    run(scenario())


def test_a_block_that_raises_with_a_healthy_connection_keeps_it() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)
        with pytest.raises(Boom):
            async with pool.acquire() as connection:
                raise Boom
        assert not connection.closed
        stats = pool.stats()
        assert stats["idle"] == 1 and stats["destroyed"] == 0 and stats["healthCheckFailures"] == 0
        async with pool.acquire() as again:
            assert again is connection
        assert_consistent(pool, backend)

    run(scenario())


def test_real_sqlite_block_that_raises_after_closing_its_connection_discards_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=0, max_size=2)
        with pytest.raises(sqlite3.ProgrammingError):
            async with pool.acquire() as db:
                broken = db
                db.close()
                db.execute("SELECT 1")
        stats = pool.stats()
        assert stats["size"] == 0 and stats["destroyed"] == 1 and stats["healthCheckFailures"] == 1
        async with pool.acquire() as db:
            assert db is not broken and sqlite_is_healthy(db)
        await pool.close()

    run(scenario())


def test_a_discarded_connection_is_replaced_for_the_next_waiter() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)
        got: list[FakeConnection] = []

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0) as connection:
                got.append(connection)

        with pytest.raises(Boom):
            async with pool.acquire() as broken:
                task = asyncio.create_task(waiter())
                await wait_until(lambda: pool.stats()["waiting"] == 1)
                broken.broken = True
                raise Boom
        await task
        assert len(got) == 1 and got[0] is not broken and not got[0].broken
        assert broken.closed
        assert pool.stats()["timeouts"] == 0
        assert_consistent(pool, backend)

    run(scenario())


# -- idle shrink ---------------------------------------------------------------------------------


def test_idle_connections_beyond_min_size_are_closed_oldest_first_after_idle_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        backend = FakeBackend()
        pool = backend.pool(min_size=1, max_size=3, idle_timeout=10.0, clock=clock)
        await pool.open()
        a_cm, b_cm, c_cm = pool.acquire(), pool.acquire(), pool.acquire()
        a = await a_cm.__aenter__()
        b = await b_cm.__aenter__()
        c = await c_cm.__aenter__()
        await c_cm.__aexit__(None, None, None)  # idle since 1000
        clock.advance(4)
        await b_cm.__aexit__(None, None, None)  # idle since 1004
        clock.advance(4)
        await a_cm.__aexit__(None, None, None)  # idle since 1008
        assert pool.stats()["size"] == 3 and pool.stats()["idle"] == 3

        clock.advance(5)  # now 1013: only c has been idle for >= 10 s
        async with pool.acquire() as taken:
            assert taken is a  # the most recently used connection is handed out
        assert c.closed and not b.closed and not a.closed
        assert pool.stats()["size"] == 2

        clock.advance(100)  # everything is old now, but min_size stays
        async with pool.acquire():
            pass
        stats = pool.stats()
        assert stats["size"] == 1 and stats["idle"] == 1 and stats["destroyed"] == 2
        assert b.closed and not a.closed
        assert_consistent(pool, backend)

    run(scenario())


def test_idle_shrink_also_happens_on_release() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=2, idle_timeout=10.0, clock=clock)
        held_cm, spare_cm = pool.acquire(), pool.acquire()
        held = await held_cm.__aenter__()
        spare = await spare_cm.__aenter__()
        await spare_cm.__aexit__(None, None, None)
        clock.advance(30)
        await held_cm.__aexit__(None, None, None)  # release: the spare has aged out
        assert spare.closed and not held.closed
        assert pool.stats()["size"] == 1 and pool.stats()["idle"] == 1
        assert_consistent(pool, backend)

    run(scenario())


def test_no_shrink_before_idle_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=3, idle_timeout=10.0, clock=clock)
        async with pool.acquire(), pool.acquire(), pool.acquire():
            pass
        clock.advance(9.5)
        async with pool.acquire():
            pass
        assert pool.stats()["size"] == 3 and pool.stats()["destroyed"] == 0

    run(scenario())


# -- close -------------------------------------------------------------------------------------


def test_close_fails_current_waiters_with_pool_closed_error() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=2, name="ledger")

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0):
                raise AssertionError("a closed pool handed out a connection")

        async with pool.acquire(), pool.acquire():
            waiters = [asyncio.create_task(waiter()) for _ in range(3)]
            await wait_until(lambda: pool.stats()["waiting"] == 3)
            await pool.close()
            results = await asyncio.gather(*waiters, return_exceptions=True)
            assert all(isinstance(r, PoolClosedError) for r in results), results
            assert "ledger" in str(results[0])
            assert pool.stats()["waiting"] == 0 and pool.stats()["timeouts"] == 0
        assert backend.open_connections == []
        assert_consistent(pool, backend)

    run(scenario())


def test_close_closes_idle_connections_now_and_busy_ones_when_released() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=2, max_size=4)
        await pool.open()
        busy_cm, busy2_cm = pool.acquire(), pool.acquire()
        busy = await busy_cm.__aenter__()
        busy2 = await busy2_cm.__aenter__()
        async with pool.acquire(), pool.acquire():
            pass
        idle = [c for c in backend.made if c not in (busy, busy2)]
        assert len(idle) == 2 and pool.stats()["idle"] == 2 and pool.stats()["inUse"] == 2

        await pool.close()
        assert all(c.closed for c in idle)
        assert not busy.closed and not busy2.closed  # never closed under a caller
        stats = pool.stats()
        assert stats["closed"] is True and stats["idle"] == 0 and stats["inUse"] == 2

        await busy_cm.__aexit__(None, None, None)
        assert busy.closed
        error = Boom()
        assert await busy2_cm.__aexit__(Boom, error, None) is False  # released by a block that raised
        assert busy2.closed
        stats = pool.stats()
        assert stats["size"] == 0 and stats["idle"] == 0 and stats["inUse"] == 0 and stats["destroyed"] == 4
        assert backend.open_connections == []
        assert_consistent(pool, backend)

    run(scenario())


def test_acquire_after_close_raises_pool_closed_error() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=1, max_size=1, name="ledger")
        await pool.open()
        await pool.close()
        with pytest.raises(PoolClosedError, match="ledger"):
            async with pool.acquire():
                pass
        assert backend.made[0].closed

    run(scenario())


def test_real_sqlite_close_closes_every_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=2, max_size=3)
        await pool.open()
        seen: list[sqlite3.Connection] = []
        async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
            seen += [a, b, c]
        in_use_cm = pool.acquire()
        held = await in_use_cm.__aenter__()
        await pool.close()
        assert sqlite_is_healthy(held)  # still in use: not closed under the caller
        idle = [db for db in seen if db is not held]
        assert all(not sqlite_is_healthy(db) for db in idle)
        await in_use_cm.__aexit__(None, None, None)
        assert not sqlite_is_healthy(held)
        assert pool.stats()["size"] == 0

    run(scenario())


# -- cancellation ------------------------------------------------------------------------------


def test_cancelling_a_waiter_does_not_leak_a_connection() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0):
                raise AssertionError("cancelled waiter must not get a connection")

        async with pool.acquire() as held:
            task = asyncio.create_task(waiter())
            await wait_until(lambda: pool.stats()["waiting"] == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pool.stats()["waiting"] == 0
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["inUse"], stats["waiting"]) == (1, 1, 0, 0)
        async with pool.acquire(timeout=0.5) as again:
            assert again is held
        assert_consistent(pool, backend)

    run(scenario())


def test_a_waiter_cancelled_just_after_being_handed_a_connection_gives_it_back() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = backend.pool(min_size=0, max_size=1)
        entered = False

        async def waiter() -> None:
            nonlocal entered
            async with pool.acquire(timeout=5.0):
                entered = True

        async with pool.acquire() as held:
            task = asyncio.create_task(waiter())
            await wait_until(lambda: pool.stats()["waiting"] == 1)
        # The release handed `held` to the waiter, which has not run yet; cancel it now.
        assert pool.stats()["inUse"] == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not entered
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["inUse"], stats["waiting"]) == (1, 1, 0, 0)
        async with pool.acquire(timeout=0.5) as again:
            assert again is held
        assert_consistent(pool, backend)

    run(scenario())


def test_cancelled_waiters_do_not_disturb_fifo_order_of_the_rest() -> None:
    async def scenario() -> None:
        pool: ConnectionPool[object] = ConnectionPool(object, min_size=0, max_size=1)
        order: list[int] = []

        async def worker(n: int) -> None:
            async with pool.acquire(timeout=5.0):
                order.append(n)

        async with pool.acquire():
            tasks = []
            for n in range(6):
                tasks.append(asyncio.create_task(worker(n)))
                await wait_until(lambda: pool.stats()["waiting"] == n + 1)
            tasks[1].cancel()
            tasks[4].cancel()
            await settle()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert order == [0, 2, 3, 5]
        assert isinstance(results[1], asyncio.CancelledError) and isinstance(results[4], asyncio.CancelledError)
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["inUse"], stats["waiting"]) == (1, 1, 0, 0)

    run(scenario())


@pytest.mark.parametrize("how", ["cancelled", "timed-out"])
def test_a_waiter_that_gives_up_while_its_replacement_is_created_does_not_leak_it(how: str) -> None:
    """A broken connection is replaced for the first waiter; that waiter leaves mid-creation."""

    async def scenario() -> None:
        backend = FakeBackend(use_async=True)
        pool = backend.pool(min_size=0, max_size=1)
        release = asyncio.Event()

        async def holder() -> None:
            async with pool.acquire() as connection:
                await release.wait()
                connection.broken = True
                raise Boom

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0 if how == "cancelled" else 0.05):
                pass

        holding = asyncio.create_task(holder())
        await wait_until(lambda: pool.stats()["inUse"] == 1)
        waiting = asyncio.create_task(waiter())
        await wait_until(lambda: pool.stats()["waiting"] == 1)
        backend.gate = asyncio.Event()
        release.set()
        await wait_until(lambda: backend.creating == 1)  # the replacement is being created
        if how == "cancelled":
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        else:
            with pytest.raises(PoolTimeoutError):
                await waiting
        backend.gate.set()
        with pytest.raises(Boom):
            await holding
        await settle()
        # Every connection the factory made is either in the pool or closed.
        assert_consistent(pool, backend)
        stats = pool.stats()
        assert stats["inUse"] == 0 and stats["waiting"] == 0

    run(scenario())


def test_cancelling_an_acquire_during_connection_creation_keeps_size_accurate() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        backend.gate = asyncio.Event()
        pool = backend.pool(min_size=0, max_size=1)

        async def taker() -> None:
            async with pool.acquire():
                pass

        task = asyncio.create_task(taker())
        await wait_until(lambda: backend.creating == 1)
        assert pool.stats()["size"] == 1  # the slot is reserved while creating
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.stats()["size"] == 0
        backend.gate = None
        async with pool.acquire(timeout=0.5):
            assert pool.stats()["size"] == 1

    run(scenario())


# -- stats -------------------------------------------------------------------------------------


def test_stats_report_plain_numbers() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        backend = FakeBackend()
        pool = backend.pool(min_size=1, max_size=2, clock=clock, name="ledger")
        fresh = pool.stats()
        assert fresh == {
            "size": 0,
            "idle": 0,
            "inUse": 0,
            "waiting": 0,
            "minSize": 1,
            "maxSize": 2,
            "created": 0,
            "destroyed": 0,
            "acquired": 0,
            "timeouts": 0,
            "healthCheckFailures": 0,
            "avgWaitMs": 0.0,
            "closed": False,
        }
        await pool.open()
        async with pool.acquire():
            async with pool.acquire():
                stats = pool.stats()
                assert (stats["size"], stats["idle"], stats["inUse"], stats["acquired"]) == (2, 0, 2, 2)
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["inUse"], stats["created"]) == (2, 2, 0, 2)
        assert stats["avgWaitMs"] == 0.0  # the manual clock never moved while acquiring
        await pool.close()
        stats = pool.stats()
        assert stats["closed"] is True and stats["destroyed"] == 2 and stats["size"] == 0

    run(scenario())


def test_avg_wait_reflects_time_spent_waiting_on_the_clock() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        pool: ConnectionPool[object] = ConnectionPool(object, min_size=0, max_size=1, clock=clock)

        async def waiter() -> None:
            async with pool.acquire(timeout=5.0):
                pass

        async with pool.acquire():
            task = asyncio.create_task(waiter())
            await wait_until(lambda: pool.stats()["waiting"] == 1)
            clock.advance(0.5)  # the waiter "waited" 500 ms by the pool's clock
        await task
        assert pool.stats()["acquired"] == 2
        assert pool.stats()["avgWaitMs"] == pytest.approx(250.0)

    run(scenario())
