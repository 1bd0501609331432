"""State a service's replicas share, in Redis: one link per process, and the stores over it.

    link = RedisLink("unix:///run/redis.sock", timeout=0.05, fallback="local")   # imports redis-py
    limiter = RateLimiter(100, 10, store=RedisBucketStore(link, "web", replicas=2))
    decision = await limiter.check("10.0.0.7")      # one round trip; never raises for Redis's failures
    cache = PersistentCache(store=RedisCacheStore(link, "budget"))      # await cache.aget / aset
    spend = RedisSpend(link, "openai")               # budget's Ledger reserves calls through it
    link.state()                                     # {"state": "shared" | "fallback", ...}: /ready, observe
    await link.close()

Contract:

- redis-py (`pip install 'tooloo[redis]'`) is imported here only, and only when [stack]
  redis_url is set: ~0.1 s of imports a process, paid by the stacks that use Redis alone.
- Every command has one timeout for connecting and for its answer ([stack] redis_timeout,
  50 ms by default), and no retry (redis-py retries three times by default, and waits
  4.5 s on a refused connection): a Redis that is gone or does not answer costs a request
  that much at most. Commands go through a CircuitBreaker of the link's own ("redis"):
  three failures in a row open it, then for a second every call is answered at once by
  the fallback, then one tries Redis again; when it answers, the shared state is used
  again, with no restart.
- No failure of Redis reaches a request. A limit falls back as [stack] redis_fallback
  says: "local", a bucket of this process at its share of the limit (capacity and refill
  divided by the service's replicas, at least one token); "deny", no token (429, with
  Retry-After, until Redis answers again).
- The buckets: a hash per limiter and client, `tooloo:ratelimit:NAME:CLIENT` (a long
  client id as its digest), refilled and taken by one Lua script on Redis's own clock
  (TIME: the replicas' clocks need not agree), expiring once it would be full again, so
  N replicas together allow what one allows, and the X-RateLimit-* headers mean the same.
- The caches (RedisCacheStore) and the day's spend (RedisSpend) are described where they
  are defined below; coach's lease is in leadership.py.
- The URL may hold a password: it is never shown (`state()` names the server without it).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tooloo_cli.resilience import (
    BucketState,
    CircuitBreaker,
    CircuitOpenError,
    Encoded,
    MemoryBucketStore,
    StoreStats,
    bucket_key,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

FALLBACKS = ("local", "deny")
FAILURES_TO_OPEN = 3  # commands failed in a row before the link stops trying for RETRY_AFTER
RETRY_AFTER = 1.0  # seconds the fallback answers alone before Redis is tried again

# KEYS[1] the bucket; ARGV capacity, refill per second, tokens asked. Returns the tokens the bucket
# held (a string: Lua numbers become integers on the way out), having taken them if enough.
TAKE = """
local capacity, rate, asked = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local available = capacity
if held[1] then
  available = math.min(capacity, tonumber(held[1]) + math.max(now - tonumber(held[2]), 0) * rate)
end
local left = available
if available >= asked then left = available - asked end
redis.call('HSET', KEYS[1], 'tokens', tostring(left), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - left) / rate * 1000) + 1000)
return tostring(available)
"""


def describe_server(url: str) -> str:
    """The server a Redis URL names, without its password: `redis://host:6379/0`, `unix:///x.sock`."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


class RedisUnavailable(Exception):
    """Redis could not be used for this call (the reason is the message; the caller falls back)."""


class RedisLink:
    """This process's connection to Redis, with its timeout, its breaker and its state."""

    def __init__(self, url: str, *, timeout: float = 0.05, fallback: str = "local") -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
        import redis.asyncio as redis  # here, and only when configured: see the module
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.server = describe_server(url)
        self.fallback = fallback
        self.timeout = timeout
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                           retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # The breaker's own deadline is a backstop: redis-py's socket timeouts answer first.
        self.breaker = CircuitBreaker("redis", failure_threshold=FAILURES_TO_OPEN, reset_timeout=RETRY_AFTER,
                                      half_open_max_calls=1, call_timeout=2 * timeout + 0.05)
        self.last_error: str | None = None
        self.fallbacks = 0  # calls answered by the fallback, since the link was made

    async def call(self, command: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """`await command(*args, **kwargs)` (a method of `client`, a script) through the breaker;
        RedisUnavailable instead of any failure."""
        try:
            answer = await self.breaker.call(command, *args, **kwargs)
        except CircuitOpenError:
            self.fallbacks += 1
            raise RedisUnavailable(f"not tried: {self.last_error or 'the breaker is open'}") from None
        except (*self.errors, TimeoutError) as exc:
            self.fallbacks += 1
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self.last_error is None:
                logger.warning("redis at %s: %s; falling back (%s) until it answers", self.server, reason,
                               self.fallback)
            self.last_error = reason
            raise RedisUnavailable(reason) from None
        if self.last_error is not None:
            logger.warning("redis at %s answers again; shared state in use", self.server)
            self.last_error = None
        return answer

    def state(self) -> dict[str, Any]:
        """Whether the shared state is in use: "shared", or "fallback" with what answers instead and why."""
        using = self.breaker.state == "closed" and self.last_error is None
        return {"server": self.server, "state": "shared" if using else "fallback", "fallback": self.fallback,
                "error": self.last_error, "breaker": self.breaker.state, "fallbackCalls": self.fallbacks,
                "timeoutMs": self.timeout * 1000}

    async def close(self) -> None:
        await self.client.aclose()


class RedisBucketStore:
    """A SharedBucketStore: the buckets of limiter `name` in Redis (see the module), a local bucket
    at `1 / replicas` of the limit (or none, with fallback "deny") while Redis cannot be used."""

    def __init__(self, link: RedisLink, name: str, *, replicas: int = 1, max_clients: int = 10_000) -> None:
        self.link = link
        self.prefix = f"tooloo:ratelimit:{name}:"
        self.replicas = max(replicas, 1)
        self.local = MemoryBucketStore(max_clients)  # what "local" answers from, meanwhile
        self.max_clients = max_clients
        self._script = link.client.register_script(TAKE)

    @property
    def evictions(self) -> int:
        return self.local.evictions

    @property
    def overflowed(self) -> int:
        return self.local.overflowed

    async def take_shared(self, client: str, tokens: int, capacity: int, refill_rate: float) -> float:
        try:
            # A Script runs by its digest, and loads itself again where Redis has lost it (a restart).
            answer = await self.link.call(self._script, keys=[self.prefix + bucket_key(client)],
                                          args=[capacity, refill_rate, tokens])
            return float(answer)
        except RedisUnavailable:
            if self.link.fallback == "deny":
                return 0.0
            return self.take(client, tokens, time.monotonic(), capacity, refill_rate)

    def shared_state(self) -> dict[str, Any]:
        return self.link.state()

    # The rest of BucketStore, for the policy's sync paths: the local buckets (what this process holds).

    def _share(self, capacity: int) -> int:
        """This replica's part of a limit of `capacity` (at least one token); its refill is rate ÷ replicas."""
        return max(capacity // self.replicas, 1)

    def take(self, client: str, tokens: int, now: float, capacity: int, refill_rate: float,
             max_debt: float = 0.0) -> float:
        return self.local.take(client, tokens, now, self._share(capacity), refill_rate / self.replicas, max_debt)

    def give_back(self, client: str, tokens: int, capacity: int) -> None:
        self.local.give_back(client, tokens, self._share(capacity))

    def forget(self, client: str | None = None) -> None:
        self.local.forget(client)

    def busiest(self, top: int, now: float, capacity: int, refill_rate: float) -> list[BucketState]:
        return self.local.busiest(top, now, self._share(capacity), refill_rate / self.replicas)

    def __len__(self) -> int:
        return len(self.local)


# A cached value in Redis: whether its JSON is compressed (1 byte), when it expires (epoch seconds,
# a double: the memory layer keeps it), then the bytes as PersistentCache encoded them.
_ENTRY_HEAD = struct.Struct("<Bd")


class RedisCacheStore:
    """A SharedCacheStore: cache `name`'s encoded entries in Redis under `tooloo:cache:NAME:KEY`, each
    expiring with its time to live, so that what one replica cached is a hit for every other.

    While Redis cannot be used, `fetch` finds nothing and `put` keeps nothing: the policy's memory
    layer caches alone ("memory cache"), whatever [stack] redis_fallback says (a cache that denies
    is no cache), and the shared entries are used again as soon as Redis answers.
    """

    def __init__(self, link: RedisLink, name: str) -> None:
        self.link = link
        self.prefix = f"tooloo:cache:{name}:"
        self.errors = 0
        self._sending: set[asyncio.Task[None]] = set()

    async def fetch(self, key: str) -> tuple[Encoded, float] | None:
        try:
            raw = await self.link.call(self.link.client.get, self.prefix + key)
        except RedisUnavailable:
            self.errors += 1
            return None
        if raw is None or len(raw) < _ENTRY_HEAD.size:
            return None
        compressed, expires = _ENTRY_HEAD.unpack_from(raw)
        return Encoded(raw[_ENTRY_HEAD.size:], compressed), expires

    async def put(self, key: str, value: Encoded, expires: float) -> None:
        milliseconds = int((expires - time.time()) * 1000)
        if milliseconds <= 0:
            return
        data, compressed = value
        try:
            await self.link.call(self.link.client.set, self.prefix + key, _ENTRY_HEAD.pack(compressed, expires) + data,
                                 px=milliseconds)
        except RedisUnavailable:
            self.errors += 1

    def shared_state(self) -> dict[str, Any]:
        return self.link.state()

    # The sync side of CacheStore: nothing is found without a round trip, and writes go in the background.

    def get(self, key: str) -> tuple[Encoded, float] | None:
        return None

    def set(self, key: str, value: Encoded, expires: float) -> None:
        self._send(self.put(key, value, expires))

    def delete(self, key: str) -> bool:
        self._send(self._delete(key))
        return False  # not known without a round trip

    async def _delete(self, key: str) -> None:
        try:
            await self.link.call(self.link.client.delete, self.prefix + key)
        except RedisUnavailable:
            self.errors += 1

    def clear(self) -> None:
        self._send(self._clear())

    async def _clear(self) -> None:
        try:
            keys = [key async for key in self.link.client.scan_iter(match=self.prefix + "*", count=500)]
            if keys:
                await self.link.call(self.link.client.delete, *keys)
        except (RedisUnavailable, *self.link.errors):
            self.errors += 1

    def cleanup(self, now: float) -> list[str]:
        return []  # Redis expires each entry itself

    def sweep(self, now: float, rows: int) -> list[str]:
        return []  # as cleanup

    def close(self) -> None:
        return None  # the link is the service's, closed with it

    def stats(self) -> StoreStats:
        state = self.link.state()
        return StoreStats(items=0, persistent=state["state"] == "shared", error=state["error"], errors=self.errors)

    def _send(self, write: Any) -> None:
        """Runs `write` (a coroutine) in the background, kept referenced until it is done."""
        try:
            task = asyncio.get_running_loop().create_task(write)
        except RuntimeError:  # no loop (a script, a test): nothing is sent
            write.close()
            return
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)


# The day's spend of a provider is a hash: `total`, and each call's cost under its ledger row's id, so
# that every change is an absolute value, and sending one again (its answer was late, it was counted
# while Redis was away) changes nothing. Without `total` the day is not counted there: the caller
# starts it from the ledger's total (`SEED`) and asks again.
#
# RESERVE: KEYS[1] the hash; ARGV row, worst case, daily budget, lifetime (s). Returns {1 reserved |
# 0 refused | -1 not counted, the total then}.
RESERVE = """
local total = redis.call('HGET', KEYS[1], 'total')
if not total then return {-1, '0'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1, total} end
if tonumber(total) + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return {0, total} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
total = redis.call('HINCRBYFLOAT', KEYS[1], 'total', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, total}
"""
# SEED: KEYS[1]; ARGV the ledger's total, lifetime. Starts the day at that total unless someone has.
SEED = """
if redis.call('HSETNX', KEYS[1], 'total', ARGV[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return redis.call('HGET', KEYS[1], 'total')
"""
# SET: KEYS[1]; ARGV row, its cost now, what the total holds of it if the row is not there (it was
# counted in the total the day was started from). Returns the total, or nil when the day is not counted.
SET = """
if redis.call('HEXISTS', KEYS[1], 'total') == 0 then return false end
local before = redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HINCRBYFLOAT', KEYS[1], 'total', tonumber(ARGV[2]) - tonumber(before))
"""
SPEND_KEPT_SECONDS = 2 * 86_400  # a day's hash outlives its day, then goes


class RedisSpend:
    """Provider `provider`'s spend per day in Redis, for every replica (`tooloo:spend:PROVIDER:DAY`):
    a call's worst case is reserved against the daily budget in one atomic step, its real cost set in
    its place afterwards; every step is idempotent (see the scripts). Raises RedisUnavailable (the
    change may or may not have been made: sending it again is safe)."""

    def __init__(self, link: RedisLink, provider: str) -> None:
        self.link = link
        self.prefix = f"tooloo:spend:{provider}:"
        self._reserve = link.client.register_script(RESERVE)
        self._seed = link.client.register_script(SEED)
        self._set = link.client.register_script(SET)

    async def reserve(self, day: str, row: int, usd: float, limit: float) -> tuple[bool | None, float]:
        """(True reserved, False refused, None not counted yet: `seed` first; the day's total then)."""
        reserved, total = await self.link.call(self._reserve, keys=[self.prefix + day],
                                               args=[row, repr(usd), repr(limit), SPEND_KEPT_SECONDS])
        return (None if int(reserved) < 0 else bool(int(reserved))), float(total)

    async def seed(self, day: str, total: float) -> float:
        """Starts the day's count at `total` (the ledger's) unless it is counted already; the total then."""
        return float(await self.link.call(self._seed, keys=[self.prefix + day], args=[repr(total), SPEND_KEPT_SECONDS]))

    async def set(self, day: str, row: int, usd: float, counted: float) -> float | None:
        """Row `row` costs `usd` now (`counted`: what the day's total holds of it if Redis has no such row);
        the total then, None when the day is not counted (the next reserve starts it from the ledger)."""
        total = await self.link.call(self._set, keys=[self.prefix + day], args=[row, repr(usd), repr(counted)])
        return None if total is None else float(total)
