"""Token-bucket rate limiting per client.

Buckets refill lazily from a monotonic clock when they are touched, so there is no timer
thread or task. Memory stays bounded in count and in bytes: past `max_clients` buckets,
the least recently used tenth are evicted in one pass (cheaper per request than keeping
an exact LRU order), and a client id longer than MAX_KEY_LENGTH characters is kept as
its digest, so no caller can grow a bucket with a long id.

    limiter = RateLimiter(capacity=100, refill_rate=10)
    decision = limiter.try_acquire("10.0.0.7")
    if not decision.allowed:
        reply_429(retry_after=decision.retry_after)
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from functools import partial
from typing import Any, NamedTuple


class _Bucket:
    __slots__ = ("tokens", "updated", "denied")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated
        self.denied = 0


class Decision(NamedTuple):
    """The answer to one acquire: allowed or not, and what the response headers need.

    `reset` is the epoch second at which the bucket is full again; `retry_after` is the
    number of seconds until the request could be allowed (0 when it was).
    """

    allowed: bool
    remaining: int
    limit: int
    retry_after: float
    reset: float


# Building the tuple directly skips NamedTuple's Python-level __new__ on the hot path.
_decision = partial(tuple.__new__, Decision)

MAX_KEY_LENGTH = 64  # an IPv6 address with a zone fits


def _key(client: str) -> str:
    """The id a bucket is kept under: the client's, or a fixed-size digest of a long one."""
    if len(client) <= MAX_KEY_LENGTH:
        return client
    return "sha256:" + hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RateLimiter:
    """Per-client token buckets of `capacity` tokens refilled at `refill_rate` tokens/s.

    `max_wait` is how long `acquire` may wait for tokens before it gives up (0: never
    waits). `clock` is injectable for tests and must be monotonic.
    """

    def __init__(
        self,
        capacity: int,
        refill_rate: float,
        *,
        max_clients: int = 10_000,
        max_wait: float = 0.0,
        clock: Any = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if refill_rate <= 0:
            raise ValueError(f"refill_rate must be > 0, got {refill_rate}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        self.capacity = capacity
        self.refill_rate = float(refill_rate)
        self.max_clients = max_clients
        self.max_wait = max_wait
        self._clock = clock
        # Converts the monotonic clock to epoch seconds for the X-RateLimit-Reset header
        # without a second clock read per call.
        self._epoch_offset = time.time() - clock()
        self._buckets: dict[str, _Bucket] = {}
        self._allowed = 0
        self._denied = 0
        self._evictions = 0

    def _bucket(self, client: str, now: float) -> _Bucket:
        """The client's bucket, refilled up to `now` (a new one is full)."""
        client = _key(client)
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._evict()
            bucket = self._buckets[client] = _Bucket(float(self.capacity), now)
            return bucket
        tokens = bucket.tokens + (now - bucket.updated) * self.refill_rate
        bucket.tokens = tokens if tokens < self.capacity else float(self.capacity)
        bucket.updated = now
        return bucket

    def _evict(self) -> None:
        """Drops the least recently used tenth of the buckets (at least one)."""
        count = max(self.max_clients // 10, 1)
        stale = heapq.nsmallest(count, self._buckets.items(), key=lambda item: item[1].updated)
        for client, _ in stale:
            del self._buckets[client]
        self._evictions += len(stale)

    def _check_request(self, tokens: int) -> None:
        if tokens < 1:
            raise ValueError(f"tokens must be at least 1, got {tokens}")
        if tokens > self.capacity:
            raise ValueError(f"asked for {tokens} tokens but the bucket holds at most {self.capacity}")

    def try_acquire(self, client: str, tokens: int = 1) -> Decision:
        """Takes `tokens` from `client`'s bucket if it has them; never waits."""
        if tokens != 1:
            self._check_request(tokens)
        now = self._clock()
        # The refill of `_bucket` is inlined for a known client: this is the hot path
        # of every request under /api, and a call costs a third of it. A long id is never
        # found here (it is kept as its digest): `_bucket` looks it up.
        bucket = self._buckets.get(client)
        capacity = self.capacity
        rate = self.refill_rate
        if bucket is None:
            bucket = self._bucket(client, now)
            available = bucket.tokens
        else:
            available = bucket.tokens + (now - bucket.updated) * rate
            if available > capacity:
                available = capacity
            bucket.updated = now
        if available >= tokens:
            available -= tokens
            bucket.tokens = available
            self._allowed += 1
            return _decision((True, int(available), capacity, 0.0, now + self._epoch_offset + (capacity - available) / rate))
        bucket.tokens = available
        bucket.denied += 1
        self._denied += 1
        return _decision((
            False, max(int(available), 0), capacity, (tokens - available) / rate,
            now + self._epoch_offset + (capacity - available) / rate,
        ))

    async def acquire(self, client: str, tokens: int = 1, max_wait: float | None = None) -> Decision:
        """Like `try_acquire`, but waits when the tokens arrive within `max_wait` seconds.

        The tokens are reserved before sleeping (the bucket goes into debt), so waiting
        requests of one client are served in order and none is starved; a request whose
        wait would exceed `max_wait` is denied at once instead of queueing forever.
        """
        self._check_request(tokens)
        limit = self.max_wait if max_wait is None else max_wait
        now = self._clock()
        bucket = self._bucket(client, now)
        available = bucket.tokens
        wait = (tokens - available) / self.refill_rate
        if wait > limit:
            return self.try_acquire(client, tokens)
        bucket.tokens = available - tokens
        self._allowed += 1
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                bucket.tokens = min(bucket.tokens + tokens, float(self.capacity))
                self._allowed -= 1
                raise
        remaining = max(int(available - tokens), 0)
        reset = now + self._epoch_offset + (self.capacity - available + tokens) / self.refill_rate
        return _decision((True, remaining, self.capacity, 0.0, reset))

    def reset(self, client: str | None = None) -> None:
        """Forgets one client's bucket, or every bucket."""
        if client is None:
            self._buckets.clear()
        else:
            self._buckets.pop(_key(client), None)

    def stats(self, top: int = 10) -> dict[str, Any]:
        """Counters as plain numbers, with the `top` most denied clients under `buckets`."""
        total = self._allowed + self._denied
        now = self._clock()
        rate = self.refill_rate
        # The most limited first: most denials, then the emptiest bucket.
        busiest = sorted(self._buckets.items(), key=lambda item: (-item[1].denied, item[1].tokens))
        return {
            "rateLimit": self.capacity,
            "refillRate": rate,
            "totalRequests": total,
            "allowedRequests": self._allowed,
            "deniedRequests": self._denied,
            "allowRate": self._allowed / total if total else 1.0,
            "activeBuckets": len(self._buckets),
            "maxClients": self.max_clients,
            "evictions": self._evictions,
            "buckets": {
                client: {
                    "tokens": min(bucket.tokens + (now - bucket.updated) * rate, float(self.capacity)),
                    "denied": bucket.denied,
                }
                for client, bucket in busiest[:top]
            },
        }
