"""Where each service's limiter and cache keep their state: the stores, chosen from settings.

    limiter = make_limiter(settings.rate_limiter)                   # buckets in this process
    cache = make_cache(settings.cache, loaded.state_path("budget-cache.db"))

A limiter and a cache are policies (`tooloo_cli.resilience`); a store is where their
state lives, behind a small protocol (`BucketStore`, `CacheStore`). Today a limiter's
buckets live in the process (`MemoryBucketStore`) and a cache is its memory LRU over a
SQLite file in the state directory (`SQLiteCacheStore`); a shared store (Redis) is
chosen here, and nowhere else, when the settings name one.
"""

from __future__ import annotations

from pathlib import Path

from tooloo_cli.config.schema import CacheSettings, RateLimiterSettings
from tooloo_cli.resilience import MemoryBucketStore, PersistentCache, RateLimiter, SQLiteCacheStore


def make_limiter(settings: RateLimiterSettings) -> RateLimiter:
    return RateLimiter(settings.capacity, settings.refill_rate, store=MemoryBucketStore(settings.max_clients))


def make_cache(settings: CacheSettings, path: Path) -> PersistentCache:
    return PersistentCache(store=SQLiteCacheStore(path), ttl=settings.ttl_seconds,
                           max_memory_items=settings.memory_items, compress_threshold=settings.compress_threshold)
