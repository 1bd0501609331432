"""Query batching and in-flight deduplication (singleflight).

Writes queued with `execute` are grouped by their normalised text and run together by a
pluggable executor once `batch_size` are queued or `batch_window` seconds after the first
one; the caller's await returns when its batch has run (or raises the batch's error, for
every write in it). With `batch_window=0` it is a group commit: a write that finds no
batch of its text running starts one at once, and writes arriving while one runs go
together in the next, as soon as it is done (the least latency when idle, the most
batching under load). `singleflight` makes identical in-flight calls share one execution.

    optimizer = QueryOptimizer(SQLiteBatchExecutor(pool), batch_size=50, batch_window=0.01)
    await optimizer.execute("INSERT INTO spend(provider, usd) VALUES (?, ?)", ("sim", 0.02))
    text = await optimizer.singleflight(("prompt", prompt), lambda: provider.complete(prompt))
    optimizer.snapshot().batches       # counters, typed; stats() is their JSON
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tooloo_cli.resilience.pool import ConnectionPool
from tooloo_cli.resilience.singleflight import SingleFlight

T = TypeVar("T")
Params = Sequence[Any]


class BatchExecutor(Protocol):
    """Runs one query with many parameter sets, as one unit."""

    async def run_batch(self, query: str, params: list[Params]) -> None: ...


class SQLiteBatchExecutor:
    """Runs a batch with `executemany` in one transaction, on a pooled connection in a worker thread."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    async def run_batch(self, query: str, params: list[Params]) -> None:
        await self.pool.run(_executemany_in_transaction, query, params)


def _executemany_in_transaction(db: Any, query: str, params: list[Params]) -> None:
    db.execute("BEGIN")
    try:
        db.executemany(query, params)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def normalize(query: str) -> str:
    """The query with white space folded and no trailing semicolon: the batching key."""
    return " ".join(query.split()).rstrip(";").rstrip()


@dataclass(frozen=True, slots=True)
class OptimizerSnapshot:
    """A QueryOptimizer's counters and gauges at one moment; `stats()` is its JSON.

    Counters since it was made: queued (writes), batches (run), batched_queries (the rows
    those batches wrote or tried to), failed_batches, singleflight_calls and
    singleflight_shared (the calls that shared another's execution). Gauges: pending
    (queued, not yet run), inflight (distinct shared calls running).
    """

    queued: int
    pending: int
    batches: int
    batched_queries: int
    failed_batches: int
    batch_size: int
    batch_window: float
    singleflight_calls: int
    singleflight_shared: int
    inflight: int

    @property
    def avg_batch_size(self) -> float:
        return self.batched_queries / self.batches if self.batches else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "queuedQueries": self.queued,
            "pendingQueries": self.pending,
            "batchesExecuted": self.batches,
            "batchedQueries": self.batched_queries,
            "avgBatchSize": self.avg_batch_size,
            "failedBatches": self.failed_batches,
            "batchSize": self.batch_size,
            "batchWindowMs": self.batch_window * 1000,
            "singleflightCalls": self.singleflight_calls,
            "singleflightShared": self.singleflight_shared,
            "inflight": self.inflight,
        }


class QueryOptimizer:
    """Batches queued writes and deduplicates identical in-flight calls."""

    def __init__(self, executor: BatchExecutor, *, batch_size: int = 50, batch_window: float = 0.01) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if batch_window < 0:
            raise ValueError(f"batch_window must be >= 0, got {batch_window}")
        self.executor = executor
        self.batch_size = batch_size
        self.batch_window = batch_window
        self._pending: dict[str, list[tuple[Params, asyncio.Future[None]]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # query texts with a batch in flight (group commit waits for it)
        self._flight = SingleFlight()
        self.queued = self.batches = self.batched_queries = self.failed_batches = 0

    # -- batching -----------------------------------------------------------------

    async def execute(self, query: str, params: Params = ()) -> None:
        """Queues one write and returns once the batch holding it has run (or raises its error)."""
        await asyncio.shield(self.submit(query, params))

    def submit(self, query: str, params: Params = ()) -> asyncio.Future[None]:
        """Queues one write without waiting; the future settles when its batch has run."""
        key = normalize(query)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch = self._pending.setdefault(key, [])
        batch.append((params, future))
        self.queued += 1
        if len(batch) >= self.batch_size:
            self._start_flush(key)
        elif len(batch) == 1 and not (self.batch_window == 0 and key in self._running):
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self.batch_window, self._start_flush, key)
        return future

    def _start_flush(self, key: str) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        batch = self._pending.pop(key, None)
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(key, batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _run(self, query: str, batch: list[tuple[Params, asyncio.Future[None]]]) -> None:
        self.batches += 1
        self.batched_queries += len(batch)
        self._running.add(query)
        try:
            await self.executor.run_batch(query, [params for params, _ in batch])
        except Exception as exc:
            self.failed_batches += 1
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        else:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        finally:
            self._running.discard(query)
            if self.batch_window == 0 and query in self._pending and query not in self._timers:
                self._start_flush(query)  # the writes that arrived meanwhile: the next group commit

    async def flush(self) -> None:
        """Waits for shared calls in flight (they may queue writes), then runs every queued batch."""
        await self._flight.wait()
        for key in list(self._pending):
            self._start_flush(key)
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    # -- singleflight ---------------------------------------------------------------

    async def singleflight(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """Awaits `call()`, unless a call with the same `key` is in flight: then shares its outcome."""
        return await self._flight.do(key, call)

    def snapshot(self) -> OptimizerSnapshot:
        """The counters and gauges now."""
        return OptimizerSnapshot(
            queued=self.queued, pending=sum(len(batch) for batch in self._pending.values()),
            batches=self.batches, batched_queries=self.batched_queries, failed_batches=self.failed_batches,
            batch_size=self.batch_size, batch_window=self.batch_window, singleflight_calls=self._flight.calls,
            singleflight_shared=self._flight.shared, inflight=len(self._flight),
        )

    def stats(self) -> dict[str, Any]:
        """The snapshot as plain numbers."""
        return self.snapshot().to_dict()
