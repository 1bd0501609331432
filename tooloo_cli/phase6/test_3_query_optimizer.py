"""QueryOptimizer: batched writes, shared in-flight calls."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tooloo_cli.phase6.support import run
from tooloo_cli.resilience import (
    ConnectionPool,
    QueryOptimizer,
    SQLiteBatchExecutor,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)


def test_batches_queued_writes_into_executemany(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict]:
        pool = ConnectionPool(sqlite_connector(tmp_path / "ledger.db"), health_check=sqlite_is_healthy, close=sqlite_close)
        async with pool.acquire() as db:
            db.execute("CREATE TABLE spend (provider TEXT, usd REAL)")
        optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=25, batch_window=0.005)
        await asyncio.gather(*(
            optimizer.execute("INSERT INTO spend VALUES (?, ?)", ("sim", i / 100)) for i in range(100)
        ))
        async with pool.acquire() as db:
            (rows,) = db.execute("SELECT count(*) FROM spend").fetchone()
        await pool.close()
        return rows, optimizer.stats()

    rows, stats = run(scenario())
    assert rows == 100
    assert stats["batchesExecuted"] == 4 and stats["avgBatchSize"] == 25


def test_groups_queries_by_normalised_text() -> None:
    batches: list[tuple[str, int]] = []

    class Recorder:
        async def run_batch(self, query: str, params: list) -> None:
            batches.append((query, len(params)))

    async def scenario() -> None:
        optimizer = QueryOptimizer(Recorder(), batch_size=100, batch_window=0.005)
        await asyncio.gather(
            optimizer.execute("INSERT INTO t VALUES (?)", (1,)),
            optimizer.execute("INSERT  INTO t\n VALUES (?);", (2,)),
            optimizer.execute("INSERT INTO u VALUES (?)", (3,)),
        )

    run(scenario())
    assert sorted(batches) == [("INSERT INTO t VALUES (?)", 2), ("INSERT INTO u VALUES (?)", 1)]


def test_identical_in_flight_calls_share_one_execution() -> None:
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return "answer"

    class NoWrites:
        async def run_batch(self, query: str, params: list) -> None:
            raise AssertionError("singleflight must not batch anything")

    async def scenario() -> list[str]:
        optimizer = QueryOptimizer(NoWrites())
        return await asyncio.gather(*(optimizer.singleflight("same prompt", provider) for _ in range(50)))

    assert run(scenario()) == ["answer"] * 50
    assert calls == 1


def test_a_failed_batch_fails_every_write_in_it_and_is_counted() -> None:
    class Failing:
        async def run_batch(self, query: str, params: list) -> None:
            raise RuntimeError("disk I/O error")

    async def scenario() -> tuple[list[BaseException | None], dict]:
        optimizer = QueryOptimizer(Failing(), batch_size=3, batch_window=0.005)
        outcomes = await asyncio.gather(*(
            optimizer.execute("INSERT INTO spend VALUES (?)", (i,)) for i in range(3)
        ), return_exceptions=True)
        return outcomes, optimizer.stats()

    outcomes, stats = run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert stats["failedBatches"] == 1 and stats["batchesExecuted"] == 1 and stats["pendingQueries"] == 0
