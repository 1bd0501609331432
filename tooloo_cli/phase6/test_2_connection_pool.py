"""ConnectionPool: bounded, FIFO, health-checked connections (SQLite for real)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tooloo_cli.phase6.support import run
from tooloo_cli.resilience import ConnectionPool, PoolTimeoutError, sqlite_close, sqlite_connector, sqlite_is_healthy


def _sqlite_pool(path: Path, **options: object) -> ConnectionPool:
    return ConnectionPool(sqlite_connector(path), health_check=sqlite_is_healthy, close=sqlite_close, **options)


def test_reuses_connections_instead_of_opening_new_ones(tmp_path: Path) -> None:
    async def scenario() -> dict:
        pool = _sqlite_pool(tmp_path / "db.sqlite", min_size=1, max_size=4)
        await pool.open()
        for _ in range(20):
            async with pool.acquire() as db:
                assert db.execute("SELECT 1").fetchone() == (1,)
        stats = pool.stats()
        await pool.close()
        return stats

    stats = run(scenario())
    assert stats["created"] == 1 and stats["acquired"] == 20 and stats["inUse"] == 0


def test_waiters_are_served_first_in_first_out() -> None:
    async def scenario() -> list[int]:
        pool = ConnectionPool(object, min_size=0, max_size=1)
        order: list[int] = []

        async def worker(number: int) -> None:
            async with pool.acquire():
                order.append(number)
                await asyncio.sleep(0.001)

        async with pool.acquire():
            tasks = [asyncio.create_task(worker(n)) for n in range(5)]
            await asyncio.sleep(0.01)  # all five are now queued
        await asyncio.gather(*tasks)
        return order

    assert run(scenario()) == [0, 1, 2, 3, 4]


def test_acquire_times_out_with_a_clear_error() -> None:
    async def scenario() -> str:
        pool = ConnectionPool(object, min_size=0, max_size=1, name="ledger")
        async with pool.acquire():
            with pytest.raises(PoolTimeoutError) as caught:
                async with pool.acquire(timeout=0.05):
                    pass
        assert pool.stats()["timeouts"] == 1
        return str(caught.value)

    message = run(scenario())
    assert "ledger" in message and "0.05s" in message and "1/1 in use" in message


def test_broken_connections_are_replaced_by_the_health_check(tmp_path: Path) -> None:
    async def scenario() -> dict:
        pool = _sqlite_pool(tmp_path / "db.sqlite", min_size=1, max_size=2)
        await pool.open()
        async with pool.acquire() as db:
            first = db
        first.close()  # the idle connection is now broken
        async with pool.acquire() as db:
            assert db is not first
            assert db.execute("SELECT 1").fetchone() == (1,)
        stats = pool.stats()
        await pool.close()
        return stats

    stats = run(scenario())
    assert stats["healthCheckFailures"] == 1 and stats["created"] == 2 and stats["destroyed"] == 1


def test_idle_connections_shrink_back_to_the_minimum(tmp_path: Path) -> None:
    now = [0.0]

    async def scenario() -> dict:
        pool = _sqlite_pool(tmp_path / "db.sqlite", min_size=1, max_size=3, idle_timeout=30, clock=lambda: now[0])
        await pool.open()
        async with pool.acquire(), pool.acquire(), pool.acquire():
            pass
        assert pool.stats()["size"] == 3
        now[0] += 31
        async with pool.acquire():
            pass
        stats = pool.stats()
        await pool.close()
        return stats

    stats = run(scenario())
    assert stats["size"] == 1 and stats["idle"] == 1
