"""Performance Benchmarks: relative speed, asserted as generous ratios (figures: `tooloo bench`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tooloo_cli.phase6.support import run
from tooloo_cli.resilience import PersistentCache, SingleFlight, Tracer


def _seconds(operation, repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        operation()
    return time.perf_counter() - started


def test_memory_hits_are_much_cheaper_than_disk_hits(tmp_path: Path) -> None:
    with PersistentCache(tmp_path / "memory.db", ttl=60) as warm, \
            PersistentCache(tmp_path / "disk.db", ttl=60, max_memory_items=1) as cold:
        for cache in (warm, cold):
            cache.set("a", {"text": "x" * 100})
            cache.set("b", {"text": "y" * 100})
        keys = iter(["a", "b"] * 2000)
        memory = _seconds(lambda: warm.get("a"), 2000)
        disk = _seconds(lambda: cold.get(next(keys)), 2000)
    assert cold.stats()["diskHits"] >= 2000
    assert memory * 3 < disk  # measured ~28x apart


def test_unsampled_spans_cost_less_than_sampled_ones() -> None:
    sampled, unsampled = Tracer("a", sampling_rate=1.0), Tracer("b", sampling_rate=0.0)

    def spans(tracer: Tracer) -> float:
        with tracer.trace("GET /x"):
            return _seconds(lambda: tracer.span("work").__enter__().__exit__(None, None, None), 200)

    spans(sampled), spans(unsampled)  # warm up
    assert min(spans(unsampled) for _ in range(5)) < min(spans(sampled) for _ in range(5))


def test_a_cached_answer_skips_the_provider_latency(tmp_path: Path) -> None:
    """The seed claims a 40-60 % latency reduction from caching; measured, it is far more."""
    flight = SingleFlight()

    async def provider() -> str:
        await asyncio.sleep(0.02)
        return "text"

    async def answer(cache: PersistentCache, prompt: str) -> str:
        cached = cache.get(prompt)
        if cached is None:
            cached = await flight.do(prompt, provider)
            cache.set(prompt, cached)
        return cached

    async def scenario() -> tuple[float, float]:
        with PersistentCache(tmp_path / "cache.db", ttl=5) as cache:
            started = time.perf_counter()
            await answer(cache, "prompt")
            miss = time.perf_counter() - started
            started = time.perf_counter()
            await answer(cache, "prompt")
            hit = time.perf_counter() - started
        return miss, hit

    miss, hit = run(scenario())
    assert hit < miss * 0.4
