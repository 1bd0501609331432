"""Micro-benchmarks of the resilience modules: µs per operation, median of several runs.

    results = run_module_benchmarks(runs=5)
    [(r.name, r.us_per_op) for r in results]

Each benchmark returns samples in µs per operation: the mean of a timed batch for the
sub-microsecond operations, and every single operation for the cache write, whose target
is a median and whose mean is dominated by the occasional WAL checkpoint.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass
from pathlib import Path

from tooloo_cli.bench.loadgen import run
from tooloo_cli.resilience import CircuitBreaker, PersistentCache, RateLimiter, SingleFlight, Tracer

# The seed's Node figures (µs/op) and this project's targets (µs/op), where they exist.
SEED_US = {"cache set": 119.0, "cache get (memory hit)": 1.0, "rate-limit check": 2.0}
TARGET_US = {
    "cache set": 25.0,
    "cache get (memory hit)": 1.0,
    "rate-limit check": 1.0,
    "span start+end": 2.0,
    "breaker overhead": 1.0,
    "budget day total (300k-row ledger)": 2000.0,
}


@dataclass
class BenchResult:
    name: str
    us_per_op: float
    samples: int

    @property
    def ops_per_s(self) -> float | None:
        """None for a difference of timings (an overhead) too small to be a rate."""
        return 1e6 / self.us_per_op if self.us_per_op > 0 else None

    @property
    def target_us(self) -> float | None:
        return TARGET_US.get(self.name)

    @property
    def seed_us(self) -> float | None:
        return SEED_US.get(self.name)

    def to_dict(self) -> dict[str, object]:
        target, seed = self.target_us, self.seed_us
        return {
            "suite": "modules",
            "name": self.name,
            "usPerOp": self.us_per_op,
            "opsPerSec": self.ops_per_s,
            "samples": self.samples,
            "targetUs": target,
            "meetsTarget": None if target is None else self.us_per_op <= target,
            "seedUs": seed,
            "speedupVsSeed": None if seed is None or self.us_per_op <= 0 else seed / self.us_per_op,
        }


def _mean_us(started_ns: int, n: int) -> list[float]:
    """One sample: the mean µs per operation of a batch timed as a whole."""
    return [(time.perf_counter_ns() - started_ns) / n / 1000]


def _cache_set(workdir: Path, n: int) -> list[float]:
    samples = []
    with PersistentCache(workdir / "set.db", ttl=60) as cache:
        value = {"text": "a simulated answer of ordinary length " * 3, "cached": False}
        for i in range(n):
            started = time.perf_counter_ns()
            cache.set(f"key-{i}", value)
            samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def _filled_cache(path: Path, max_memory_items: int) -> tuple[PersistentCache, list[str]]:
    cache = PersistentCache(path, ttl=60, max_memory_items=max_memory_items)
    keys = [f"key-{i}" for i in range(256)]
    for key in keys:
        cache.set(key, {"text": key})
    return cache, keys


def _cache_gets(path: Path, memory_items: int, n: int) -> list[float]:
    """Reads cycling over 256 keys: all memory hits with room for them, all disk hits with one item of memory."""
    cache, keys = _filled_cache(path, memory_items)
    with cache:
        sequence = keys * (n // len(keys) + 1)
        get = cache.get
        started = time.perf_counter_ns()
        for key in sequence:
            get(key)
        return _mean_us(started, len(sequence))


def _rate_limit_check(n: int) -> list[float]:
    limiter = RateLimiter(capacity=1_000_000_000, refill_rate=1_000_000.0)
    check = limiter.try_acquire
    started = time.perf_counter_ns()
    for _ in range(n):
        check("10.0.0.7")
    return _mean_us(started, n)


def _span(n: int) -> list[float]:
    """A child span in a sampled request, 8 to a request as in a real handler."""
    tracer = Tracer("bench", sampling_rate=1.0)
    span = tracer.span
    requests = max(n // 8, 1)
    elapsed = 0
    for _ in range(requests):
        with tracer.trace("bench"):
            started = time.perf_counter_ns()
            for _ in range(8):
                with span("op"):
                    pass
            elapsed += time.perf_counter_ns() - started
    return [elapsed / (requests * 8) / 1000]


def _request_trace(sampling_rate: float, n: int) -> list[float]:
    trace = Tracer("bench", sampling_rate=sampling_rate).trace
    started = time.perf_counter_ns()
    for _ in range(n):
        with trace("GET /bench"):
            pass
    return _mean_us(started, n)


async def _noop() -> int:
    return 1


async def _await_loop(n: int, call: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    for _ in range(n):
        await call()  # type: ignore[misc]
    return (time.perf_counter_ns() - started) / n / 1000


def _breaker(n: int, call_timeout: float | None) -> list[float]:
    breaker = CircuitBreaker("bench", call_timeout=call_timeout)
    return [run(_await_loop(n, lambda: breaker.call(_noop)))]


def _breaker_overhead(n: int) -> list[float]:
    breaker = CircuitBreaker("bench", call_timeout=None)

    async def both() -> float:
        bare = await _await_loop(n, _noop)
        guarded = await _await_loop(n, lambda: breaker.call(_noop))
        return guarded - bare

    return [run(both())]


def _singleflight(n: int) -> list[float]:
    """Per caller, with 100 concurrent identical calls sharing one execution."""
    flight = SingleFlight()
    callers = 100

    async def shared() -> int:
        await asyncio.sleep(0)
        return 1

    async def rounds() -> float:
        started = time.perf_counter_ns()
        for _ in range(max(n // callers, 1)):
            await asyncio.gather(*(flight.do("same", shared) for _ in range(callers)))
        return (time.perf_counter_ns() - started) / (max(n // callers, 1) * callers) / 1000

    return [run(rounds())]


def _day_total(rows: int, n: int) -> Callable[[], list[float]]:
    """Reading today's spend from a ledger of `rows` rows of today, as `GET /api/v1/budget` does.

    The ledger is made once (with its totals kept by triggers, as budget writes it) and read `n`
    times a run: the figure is what a read costs once the day is busy, not what building it does.
    """
    import sqlite3

    from tooloo_cli.services.budget import _create_and_sum, _spend_by_provider

    made: dict[str, Any] = {}

    def case() -> list[float]:
        if not made:
            made["dir"] = tempfile.TemporaryDirectory(prefix="tooloo-bench-ledger-")
            db = sqlite3.connect(Path(made["dir"].name) / "budget.db", isolation_level=None)
            _create_and_sum(db, "2026-01-01")
            db.execute("BEGIN")
            db.executemany("INSERT INTO spend (day, provider, model, tokens, usd, criticality, at, status) "
                           "VALUES ('2026-01-01', 'simulated', 'm', 20, 0.00004, 'normal', 0, 'settled')",
                           ((),) * rows)
            db.execute("COMMIT")
            made["db"] = db
        samples = []
        for _ in range(n):
            started = time.perf_counter_ns()
            _spend_by_provider(made["db"], "2026-01-01")
            samples.append((time.perf_counter_ns() - started) / 1000)
        return samples

    return case


def run_module_benchmarks(runs: int = 5, scale: float = 1.0) -> list[BenchResult]:
    """Every module benchmark, `runs` times each; `scale` shrinks the operation counts."""

    def ops(count: int) -> int:
        return max(int(count * scale), 10)

    with tempfile.TemporaryDirectory(prefix="tooloo-bench-") as tmp:
        workdir = Path(tmp)
        cases: list[tuple[str, Callable[[], list[float]]]] = [
            ("cache set", lambda: _cache_set(workdir, ops(2_000))),
            ("cache get (memory hit)", lambda: _cache_gets(workdir / "memory.db", 1000, ops(200_000))),
            ("cache get (disk hit)", lambda: _cache_gets(workdir / "disk.db", 1, ops(20_000))),
            ("rate-limit check", lambda: _rate_limit_check(ops(200_000))),
            ("span start+end", lambda: _span(ops(100_000))),
            ("request trace (sampled)", lambda: _request_trace(1.0, ops(50_000))),
            ("request trace (unsampled)", lambda: _request_trace(0.0, ops(50_000))),
            ("breaker call", lambda: _breaker(ops(100_000), None)),
            ("breaker call (with timeout)", lambda: _breaker(ops(50_000), 10.0)),
            ("breaker overhead", lambda: _breaker_overhead(ops(100_000))),
            ("singleflight (per caller)", lambda: _singleflight(ops(50_000))),
            ("budget day total (300k-row ledger)", _day_total(ops(300_000), ops(200))),
        ]
        results = []
        for name, case in cases:
            samples: list[float] = []
            for _ in range(runs):
                for path in workdir.iterdir():  # every run starts from empty files
                    path.unlink()
                samples.extend(case())
            results.append(BenchResult(name, statistics.median(samples), len(samples)))
    return results
