"""QueryOptimizer batching, and SingleFlight deduplication (directly and via the optimizer)."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tooloo_cli.resilience.pool import ConnectionPool, sqlite_close, sqlite_connector, sqlite_is_healthy
from tooloo_cli.resilience.query_optimizer import QueryOptimizer, SQLiteBatchExecutor, normalize
from tooloo_cli.resilience.singleflight import SingleFlight
from tooloo_cli.phase6.support import run, settle

T = TypeVar("T")


# -- helpers ------------------------------------------------------------------------------


class RecordingExecutor:
    """A batch executor that records every batch and can be told to fail or to hold batches."""

    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[tuple[str, list[Sequence[Any]]]] = []
        self.error = error
        self.gate: asyncio.Event | None = None

    async def run_batch(self, query: str, params: list[Sequence[Any]]) -> None:
        self.batches.append((query, list(params)))
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error


def sqlite_pool(path: Path, **options: Any) -> ConnectionPool[sqlite3.Connection]:
    """A pool of real SQLite connections over `path`."""
    return ConnectionPool(sqlite_connector(path), health_check=sqlite_is_healthy, close=sqlite_close, **options)


async def count_rows(pool: ConnectionPool[sqlite3.Connection], table: str = "spend") -> int:
    """The number of rows in `table`, read through the pool."""
    async with pool.acquire() as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "fragment"), [({"batch_size": 0}, "batch_size"), ({"batch_window": -0.1}, "batch_window")])
def test_invalid_batch_settings_are_rejected(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        QueryOptimizer(RecordingExecutor(), **options)


# -- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "INSERT INTO t VALUES (?)",
        "INSERT INTO t VALUES (?);",
        "  INSERT   INTO t\n\tVALUES (?)  ;  ",
        "INSERT INTO t VALUES (?) ;",
        "INSERT\nINTO\nt\nVALUES\n(?);;",
    ],
)
def test_normalize_folds_white_space_and_trailing_semicolons(variant: str) -> None:
    assert normalize(variant) == "INSERT INTO t VALUES (?)"


_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789_(),?=*'", min_size=1, max_size=8)
_SPACE = st.text(alphabet=" \t\n\r", min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(_WORD, min_size=1, max_size=8), data=st.data())
def test_normalize_ignores_white_space_layout(words: list[str], data: st.DataObject) -> None:
    spaced = data.draw(_SPACE, label="lead")
    for word in words:
        spaced += word + data.draw(_SPACE, label="gap")
    if data.draw(st.booleans(), label="semicolon"):
        spaced += ";" + data.draw(_SPACE, label="tail")
    assert normalize(spaced) == " ".join(words)
    assert normalize(normalize(spaced)) == normalize(spaced)


# -- batching ----------------------------------------------------------------------------------


def test_queries_differing_only_in_layout_land_in_one_batch() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=50, batch_window=0.01)
        await asyncio.gather(
            optimizer.execute("INSERT INTO t VALUES (?)", (1,)),
            optimizer.execute("INSERT  INTO t\nVALUES (?);", (2,)),
            optimizer.execute("  INSERT INTO t VALUES (?) ;  ", (3,)),
        )
        assert executor.batches == [("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])]
        stats = optimizer.stats()
        assert stats["batchesExecuted"] == 1 and stats["batchedQueries"] == 3 and stats["queuedQueries"] == 3
        assert stats["avgBatchSize"] == 3.0 and stats["pendingQueries"] == 0 and stats["failedBatches"] == 0

    run(scenario())


def test_a_full_batch_runs_immediately_without_waiting_for_the_window() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=3, batch_window=60.0)
        # With a 60 s window, finishing at all proves the size trigger fired.
        await asyncio.wait_for(
            asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(3))), timeout=5.0
        )
        assert executor.batches == [("INSERT INTO t VALUES (?)", [(0,), (1,), (2,)])]

    run(scenario())


def test_batches_are_cut_at_batch_size_and_the_remainder_waits() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=3, batch_window=60.0)
        tasks = [asyncio.create_task(optimizer.execute("INSERT INTO t VALUES (?)", (n,))) for n in range(7)]
        await asyncio.wait_for(asyncio.gather(*tasks[:6]), timeout=5.0)
        assert [params for _, params in executor.batches] == [[(0,), (1,), (2,)], [(3,), (4,), (5,)]]
        assert not tasks[6].done()
        assert optimizer.stats()["pendingQueries"] == 1
        await optimizer.flush()
        await tasks[6]
        assert [params for _, params in executor.batches][-1] == [(6,)]
        assert optimizer.stats()["batchesExecuted"] == 3

    run(scenario())


def test_a_partial_batch_runs_once_the_window_passes() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=0.1)
        first = asyncio.create_task(optimizer.execute("INSERT INTO t VALUES (?)", (1,)))
        second = asyncio.create_task(optimizer.execute("INSERT INTO t VALUES (?)", (2,)))
        await settle()
        assert executor.batches == []  # still inside the window
        assert optimizer.stats()["pendingQueries"] == 2
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5.0)
        assert executor.batches == [("INSERT INTO t VALUES (?)", [(1,), (2,)])]

    run(scenario())


def test_zero_window_still_batches_queries_queued_in_the_same_step() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=0.0)
        await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(5)))
        assert len(executor.batches) == 1 and len(executor.batches[0][1]) == 5

    run(scenario())


def test_different_query_texts_get_separate_batches() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=50, batch_window=0.01)
        await asyncio.gather(
            optimizer.execute("INSERT INTO a VALUES (?)", (1,)),
            optimizer.execute("INSERT INTO b VALUES (?)", (2,)),
            optimizer.execute("INSERT INTO a VALUES (?)", (3,)),
            optimizer.execute("UPDATE a SET n = ? WHERE id = 1", (4,)),
        )
        by_query = {query: params for query, params in executor.batches}
        assert len(executor.batches) == 3
        assert by_query == {
            "INSERT INTO a VALUES (?)": [(1,), (3,)],
            "INSERT INTO b VALUES (?)": [(2,)],
            "UPDATE a SET n = ? WHERE id = 1": [(4,)],
        }
        assert optimizer.stats()["batchesExecuted"] == 3

    run(scenario())


def test_an_executor_error_reaches_every_caller_of_that_batch_only() -> None:
    async def scenario() -> None:
        error = RuntimeError("disk full")

        class SelectiveExecutor(RecordingExecutor):
            async def run_batch(self, query: str, params: list[Sequence[Any]]) -> None:
                self.batches.append((query, list(params)))
                await asyncio.sleep(0)
                if query.startswith("INSERT INTO bad"):
                    raise error

        executor = SelectiveExecutor()
        optimizer = QueryOptimizer(executor, batch_size=50, batch_window=0.01)
        results = await asyncio.gather(
            optimizer.execute("INSERT INTO bad VALUES (?)", (1,)),
            optimizer.execute("INSERT INTO good VALUES (?)", (2,)),
            optimizer.execute("INSERT INTO bad VALUES (?)", (3,)),
            optimizer.execute("INSERT INTO bad VALUES (?)", (4,)),
            return_exceptions=True,
        )
        assert results[0] is error and results[2] is error and results[3] is error
        assert results[1] is None
        stats = optimizer.stats()
        assert stats["failedBatches"] == 1 and stats["batchesExecuted"] == 2

    run(scenario())


def test_a_failed_batch_does_not_poison_later_batches_of_the_same_query() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor(error=ValueError("bad row"))
        optimizer = QueryOptimizer(executor, batch_size=2, batch_window=0.01)
        with pytest.raises(ValueError, match="bad row"):
            await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(2)))
        executor.error = None
        await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(2)))
        assert optimizer.stats()["failedBatches"] == 1 and optimizer.stats()["batchesExecuted"] == 2

    run(scenario())


def test_flush_runs_pending_batches_now_and_waits_for_them() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=60.0)
        tasks = [asyncio.create_task(optimizer.execute(f"INSERT INTO t{n % 2} VALUES (?)", (n,))) for n in range(6)]
        await settle()
        assert executor.batches == [] and optimizer.stats()["pendingQueries"] == 6
        await asyncio.wait_for(optimizer.flush(), timeout=5.0)
        assert len(executor.batches) == 2
        assert optimizer.stats()["pendingQueries"] == 0 and optimizer.stats()["batchesExecuted"] == 2
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5.0)
        assert optimizer._timers == {}  # the window timers were cancelled

    run(scenario())


def test_flush_waits_for_batches_already_running() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        executor.gate = asyncio.Event()
        optimizer = QueryOptimizer(executor, batch_size=1, batch_window=60.0)
        task = asyncio.create_task(optimizer.execute("INSERT INTO t VALUES (?)", (1,)))
        await settle()
        assert len(executor.batches) == 1 and not task.done()
        flushing = asyncio.create_task(optimizer.flush())
        await settle()
        assert not flushing.done()  # the running batch is not finished yet
        executor.gate.set()
        await asyncio.wait_for(flushing, timeout=5.0)
        await asyncio.wait_for(task, timeout=5.0)

    run(scenario())


def test_flush_with_nothing_queued_returns() -> None:
    async def scenario() -> None:
        optimizer = QueryOptimizer(RecordingExecutor())
        await asyncio.wait_for(optimizer.flush(), timeout=5.0)
        assert optimizer.stats()["batchesExecuted"] == 0

    run(scenario())


def test_a_cancelled_caller_does_not_remove_its_write_or_stop_the_batch() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=0.02)
        tasks = [asyncio.create_task(optimizer.execute("INSERT INTO t VALUES (?)", (n,))) for n in range(3)]
        await settle()
        tasks[1].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert results[0] is None and results[2] is None
        await optimizer.flush()
        assert executor.batches == [("INSERT INTO t VALUES (?)", [(0,), (1,), (2,)])]

    run(scenario())


def test_submit_queues_without_waiting_and_its_future_settles_with_the_batch() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor(error=None)
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=60.0)
        futures = [optimizer.submit("INSERT INTO t VALUES (?)", (n,)) for n in range(3)]
        assert not any(f.done() for f in futures) and optimizer.stats()["pendingQueries"] == 3
        await optimizer.flush()
        assert all(f.done() and f.result() is None for f in futures)
        assert executor.batches == [("INSERT INTO t VALUES (?)", [(0,), (1,), (2,)])]
        executor.error = RuntimeError("nope")
        failing = optimizer.submit("INSERT INTO t VALUES (?)", (9,))
        await optimizer.flush()
        assert isinstance(failing.exception(), RuntimeError)

    run(scenario())


def test_stats_report_configuration_and_counts() -> None:
    async def scenario() -> None:
        optimizer = QueryOptimizer(RecordingExecutor(), batch_size=4, batch_window=0.005)
        stats = optimizer.stats()
        assert stats["batchSize"] == 4 and stats["batchWindowMs"] == pytest.approx(5.0)
        assert stats["avgBatchSize"] == 0.0 and stats["batchesExecuted"] == 0 and stats["inflight"] == 0
        await asyncio.gather(*(optimizer.execute("INSERT INTO t VALUES (?)", (n,)) for n in range(10)))
        stats = optimizer.stats()
        assert stats["queuedQueries"] == 10 and stats["batchedQueries"] == 10
        assert stats["batchesExecuted"] == 3  # 4 + 4 + 2
        assert stats["avgBatchSize"] == pytest.approx(10 / 3)

    run(scenario())


# -- the real SQLite executor -------------------------------------------------------------------


def test_sqlite_executor_writes_every_row_in_fewer_batches_than_rows(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=2)
        await pool.open()
        async with pool.acquire() as db:
            db.execute("CREATE TABLE spend (provider TEXT, usd REAL)")
        optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=25, batch_window=0.01)
        rows = 200
        await asyncio.gather(
            *(optimizer.execute("INSERT INTO spend(provider, usd) VALUES (?, ?)", (f"p{n % 4}", n / 100)) for n in range(rows))
        )
        assert await count_rows(pool) == rows
        async with pool.acquire() as db:
            assert db.execute("SELECT SUM(usd) FROM spend").fetchone()[0] == pytest.approx(sum(n / 100 for n in range(rows)))
        stats = optimizer.stats()
        assert stats["batchesExecuted"] < rows
        assert stats["batchesExecuted"] == rows // 25
        assert stats["failedBatches"] == 0
        await pool.close()

    run(scenario())


def test_sqlite_executor_rolls_back_a_failing_batch_and_reports_it_to_each_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=1)
        await pool.open()
        async with pool.acquire() as db:
            db.execute("CREATE TABLE spend (id INTEGER PRIMARY KEY, usd REAL)")
        optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=4, batch_window=0.01)
        query = "INSERT INTO spend(id, usd) VALUES (?, ?)"
        results = await asyncio.gather(
            *(optimizer.execute(query, params) for params in [(1, 0.1), (2, 0.2), (1, 0.3), (3, 0.4)]),
            return_exceptions=True,
        )
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        assert await count_rows(pool) == 0  # the whole batch was rolled back
        assert optimizer.stats()["failedBatches"] == 1
        # The connection is usable again: no transaction was left open.
        await asyncio.gather(*(optimizer.execute(query, (n, n / 10)) for n in range(10, 14)))
        assert await count_rows(pool) == 4
        await pool.close()

    run(scenario())


def test_sqlite_executor_with_separate_queries_writes_to_each_table(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = sqlite_pool(tmp_path / "x.db", min_size=1, max_size=3)
        await pool.open()
        async with pool.acquire() as db:
            db.execute("CREATE TABLE spend (usd REAL)")
            db.execute("CREATE TABLE audit (note TEXT)")
        optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=1000, batch_window=0.01)
        await asyncio.gather(
            *(optimizer.execute("INSERT INTO spend VALUES (?)", (n,)) for n in range(30)),
            *(optimizer.execute("INSERT INTO audit VALUES (?);", (f"n{n}",)) for n in range(20)),
        )
        assert await count_rows(pool, "spend") == 30 and await count_rows(pool, "audit") == 20
        assert optimizer.stats()["batchesExecuted"] == 2
        await pool.close()

    run(scenario())


# -- singleflight ------------------------------------------------------------------------------


class CountingCall:
    """An async call that counts its runs and waits on a gate before returning (or raising)."""

    def __init__(self, result: Any = "result", error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.runs = 0
        self.cancelled = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> Any:
        self.runs += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.error is not None:
            raise self.error
        return self.result


def test_singleflight_concurrent_identical_calls_run_once_and_share_the_result() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        call = CountingCall(result={"answer": 42})
        tasks = [asyncio.create_task(flight.do("k", call)) for _ in range(10)]
        await settle()
        assert call.runs == 1 and len(flight) == 1
        call.gate.set()
        results = await asyncio.gather(*tasks)
        assert all(r is results[0] for r in results) and results[0] == {"answer": 42}
        assert call.runs == 1
        assert flight.calls == 10 and flight.shared == 9 and len(flight) == 0

    run(scenario())


def test_singleflight_exception_reaches_every_caller() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        error = LookupError("upstream failed")
        call = CountingCall(error=error)
        tasks = [asyncio.create_task(flight.do("k", call)) for _ in range(5)]
        await settle()
        call.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is error for r in results)
        assert call.runs == 1 and len(flight) == 0

    run(scenario())


def test_singleflight_runs_again_after_the_previous_call_finished() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        runs = 0

        async def call() -> int:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0)
            return runs

        assert await flight.do("k", call) == 1
        assert await flight.do("k", call) == 2
        failing = CountingCall(error=RuntimeError("boom"))
        failing.gate.set()
        with pytest.raises(RuntimeError):
            await flight.do("k", failing)
        assert await flight.do("k", call) == 3  # a failure is not remembered either
        assert flight.shared == 0 and flight.calls == 4

    run(scenario())


def test_singleflight_distinct_keys_run_independently() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        calls = {key: CountingCall(result=key) for key in ("a", ("b", 1))}
        tasks = [asyncio.create_task(flight.do(key, calls[key])) for key in calls for _ in range(3)]
        await settle()
        assert len(flight) == 2
        for call in calls.values():
            call.gate.set()
        assert await asyncio.gather(*tasks) == ["a"] * 3 + [("b", 1)] * 3
        assert all(call.runs == 1 for call in calls.values())
        assert flight.shared == 4

    run(scenario())


def test_singleflight_cancelling_one_caller_does_not_cancel_the_shared_call() -> None:
    async def scenario() -> None:
        flight = SingleFlight()
        call = CountingCall(result="done")
        tasks = [asyncio.create_task(flight.do("k", call)) for _ in range(3)]
        await settle()
        tasks[0].cancel()  # the caller that started the call gives up
        await settle()
        assert tasks[0].cancelled()
        call.gate.set()
        assert await asyncio.gather(tasks[1], tasks[2]) == ["done", "done"]
        assert call.runs == 1 and call.cancelled == 0

    run(scenario())


def test_singleflight_call_finishes_quietly_when_every_caller_gave_up() -> None:
    async def scenario() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        flight = SingleFlight()
        call = CountingCall(error=RuntimeError("nobody is listening"))
        tasks = [asyncio.create_task(flight.do("k", call)) for _ in range(2)]
        await settle()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        call.gate.set()
        await settle()
        assert call.runs == 1 and call.cancelled == 0 and len(flight) == 0
        del call, tasks
        gc.collect()
        await settle()
        return reported

    assert run(scenario()) == []  # no "exception was never retrieved"


def test_optimizer_singleflight_shares_calls_and_counts_them() -> None:
    async def scenario() -> None:
        optimizer = QueryOptimizer(RecordingExecutor())
        call = CountingCall(result="text")
        tasks = [asyncio.create_task(optimizer.singleflight(("prompt", "hi"), call)) for _ in range(4)]
        await settle()
        assert optimizer.stats()["inflight"] == 1
        call.gate.set()
        assert await asyncio.gather(*tasks) == ["text"] * 4
        assert call.runs == 1
        stats = optimizer.stats()
        assert stats["singleflightCalls"] == 4 and stats["singleflightShared"] == 3 and stats["inflight"] == 0

        again = CountingCall(result="again")
        again.gate.set()
        assert await optimizer.singleflight(("prompt", "hi"), again) == "again"
        assert again.runs == 1
        stats = optimizer.stats()
        assert stats["singleflightCalls"] == 5 and stats["singleflightShared"] == 3

    run(scenario())


def test_optimizer_singleflight_error_reaches_all_and_cancelling_one_spares_others() -> None:
    async def scenario() -> None:
        optimizer = QueryOptimizer(RecordingExecutor())
        error = ConnectionError("provider down")
        call = CountingCall(error=error)
        tasks = [asyncio.create_task(optimizer.singleflight("key", call)) for _ in range(4)]
        await settle()
        tasks[2].cancel()
        await settle()
        call.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [results[i] for i in (0, 1, 3)] == [error, error, error]
        assert call.runs == 1 and call.cancelled == 0

    run(scenario())


def test_a_zero_window_is_a_group_commit() -> None:
    async def scenario() -> None:
        executor = RecordingExecutor()
        executor.gate = asyncio.Event()  # the first batch takes its time
        optimizer = QueryOptimizer(executor, batch_size=100, batch_window=0.0)
        first = asyncio.ensure_future(optimizer.execute("INSERT INTO t VALUES (?)", (0,)))
        await settle()
        assert len(executor.batches) == 1  # at once: nothing was running
        later = [asyncio.ensure_future(optimizer.execute("INSERT INTO t VALUES (?)", (n,))) for n in (1, 2, 3)]
        await settle()
        assert len(executor.batches) == 1  # they wait for the batch in flight
        executor.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *later), timeout=5)
        assert [len(params) for _, params in executor.batches] == [1, 3]

    run(scenario())
