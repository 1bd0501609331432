"""Where each service's limiter and cache keep their state: the stores, chosen from settings.

    limiter = make_limiter(settings.rate_limiter, "web")            # buckets in this process
    limiter = make_limiter(settings.rate_limiter, "web", link, replicas=2)   # in Redis (services/shared.py)
    cache = make_cache(settings.cache, loaded.state_path("budget-cache.db"))
    cache = make_cache(settings.cache, path, link, "budget")        # shared by the replicas, in Redis

A limiter and a cache are policies (`tooloo_cli.resilience`); a store is where their
state lives, behind a small protocol (`BucketStore`, `CacheStore`). A limiter's buckets
live in the process (`MemoryBucketStore`), or in Redis when [stack] redis_url is set
(`RedisBucketStore`, over the process's one `RedisLink`: the limit is then the stack's,
whatever the replicas); a cache is its memory LRU over a SQLite file in the state
directory (`SQLiteCacheStore`), or over Redis (`RedisCacheStore`: one replica's answer
is every replica's hit). The store is chosen here, and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tooloo_cli.config.schema import CacheSettings, RateLimiterSettings
from tooloo_cli.resilience import (
    BucketStore,
    CacheStore,
    Encoded,
    MemoryBucketStore,
    PersistentCache,
    RateLimiter,
    SQLiteCacheStore,
)

if TYPE_CHECKING:
    from tooloo_cli.services.shared import RedisLink


def make_limiter(settings: RateLimiterSettings, name: str, link: RedisLink | None = None,
                 replicas: int = 1) -> RateLimiter:
    """The limiter `name` (its Redis keys' name), over Redis when there is a `link`, shared by `replicas`."""
    store: BucketStore
    if link is None:
        store = MemoryBucketStore(settings.max_clients)
    else:
        from tooloo_cli.services.shared import RedisBucketStore

        store = RedisBucketStore(link, name, replicas=replicas, max_clients=settings.max_clients)
    return RateLimiter(settings.capacity, settings.refill_rate, store=store)


def make_cache(settings: CacheSettings, path: Path, link: RedisLink | None = None, name: str = "") -> PersistentCache:
    """The cache of service `name`: its memory LRU over the SQLite file at `path`, or over Redis when
    there is a `link` (then shared by every replica, and `path` is not used)."""
    store: CacheStore[Encoded]
    if link is None:
        store = SQLiteCacheStore(path)
    else:
        from tooloo_cli.services.shared import RedisCacheStore

        store = RedisCacheStore(link, name)
    return PersistentCache(store=store, ttl=settings.ttl_seconds, max_memory_items=settings.memory_items,
                           compress_threshold=settings.compress_threshold)
