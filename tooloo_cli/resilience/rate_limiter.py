"""Token-bucket rate limiting per client: a policy over a store of buckets.

The policy (RateLimiter) decides: `capacity` tokens per client, refilled at
`refill_rate` tokens/s, one Decision per request with what the response headers need.
Where the buckets live is a BucketStore's business: MemoryBucketStore keeps them in this
process (the default); a shared store (Redis, say) can keep them for many processes, as
long as it does the refill-and-take step of `take` atomically.

    limiter = RateLimiter(capacity=100, refill_rate=10)      # over a MemoryBucketStore
    decision = limiter.try_acquire("10.0.0.7")
    if not decision.allowed:
        reply_429(retry_after=decision.retry_after)
    limiter.snapshot().denied                                # counters, typed; stats() is their JSON

Buckets refill lazily from a monotonic clock when they are touched, so there is no timer
thread or task. MemoryBucketStore stays bounded in count and in bytes, and the limit never
fails open: past `max_clients` buckets, room is made only from buckets that have refilled
to capacity (up to a tenth in one pass), and while none has, newcomers share one overflow
bucket; a client id longer than MAX_KEY_LENGTH characters is kept as its digest
(`bucket_key`), so no caller can grow a bucket with a long id.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol, runtime_checkable

MAX_KEY_LENGTH = 64  # an IPv6 address with a zone fits


def bucket_key(client: str) -> str:
    """The id a bucket is kept under: the client's, or a fixed-size digest of a long one."""
    if len(client) <= MAX_KEY_LENGTH:
        return client
    return "sha256:" + hashlib.sha256(client.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# -- the state -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketState:
    """One client's bucket as seen at a moment: its tokens then and the requests it was denied."""

    client: str
    tokens: float
    denied: int


@runtime_checkable
class BucketStore(Protocol):
    """Where the buckets live. Every operation takes the policy's figures, so one store may
    serve limiters of different capacities (under different client ids).

    `client` may be any length: a store keeps its keys bounded (with `bucket_key`).
    """

    max_clients: int
    """The most buckets the store keeps (it evicts or expires the rest)."""
    evictions: int
    """Buckets dropped to stay within `max_clients`, since the store was made."""
    overflowed: int
    """Requests of clients it had no room for (they were limited together), since it was made."""

    def take(self, client: str, tokens: int, now: float, capacity: int, refill_rate: float,
             max_debt: float = 0.0) -> float:
        """Refills `client`'s bucket up to `now` (a new one is full, a refilled one holds at most
        `capacity`) and returns the tokens it then holds, `available`.

        The tokens were taken if and only if `available - tokens >= -max_debt` (a negative
        balance is a debt the bucket pays back as it refills); otherwise nothing was taken
        and the request counts as a denial of the bucket. One atomic step, so that a shared
        store needs one round trip per request.
        """
        ...

    def give_back(self, client: str, tokens: int, capacity: int) -> None:
        """Returns `tokens` taken but not used (up to `capacity`); a forgotten bucket is left alone."""
        ...

    def forget(self, client: str | None = None) -> None:
        """Drops one client's bucket, or every bucket."""
        ...

    def busiest(self, top: int, now: float, capacity: int, refill_rate: float) -> list[BucketState]:
        """The `top` most limited buckets (most denials, then fewest tokens), refilled up to `now`."""
        ...

    def __len__(self) -> int:
        """The number of buckets kept."""
        ...


class _Bucket:
    __slots__ = ("tokens", "updated", "denied")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated
        self.denied = 0


OVERFLOW = "~overflow"  # no client id has a "~": the bucket newcomers share while the table is full


class MemoryBucketStore:
    """Buckets in a dict of this process, at most `max_clients` of them (and the overflow bucket).

    Room is made by dropping buckets that have refilled to capacity: they carry no
    information (a new bucket would hold the same), so no client gains by being forgotten.
    When every bucket is still limiting its client, a newcomer is not given a fresh full
    bucket (that would let a flood of new ids fail the limit open): newcomers share one
    overflow bucket until room is made, and `overflowed` counts their requests. While that
    bucket exists (it goes, like any, once refilled), a new bucket starts at its level.
    """

    def __init__(self, max_clients: int = 10_000) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.max_clients = max_clients
        self.evictions = 0
        self.overflowed = 0
        self._buckets: dict[str, _Bucket] = {}
        self._next_full = 0.0  # no bucket is full before then (see _evict)

    def take(self, client: str, tokens: int, now: float, capacity: int, refill_rate: float,
             max_debt: float = 0.0) -> float:
        # RateLimiter.try_acquire inlines this for a known client (the hot path of every
        # request under /api): keep the two alike. A long id is never found here (it is
        # kept as its digest): `_take_new` looks it up.
        bucket = self._buckets.get(client)
        if bucket is None:
            return self._take_new(client, tokens, now, capacity, refill_rate, max_debt)
        available = bucket.tokens + (now - bucket.updated) * refill_rate
        if available > capacity:
            available = capacity
        bucket.updated = now
        if available - tokens >= -max_debt:
            bucket.tokens = available - tokens
        else:
            bucket.tokens = available
            bucket.denied += 1
        return available

    def _take_new(self, client: str, tokens: int, now: float, capacity: int, refill_rate: float,
                  max_debt: float) -> float:
        key = bucket_key(client)
        if key is not client and key in self._buckets:
            return self.take(key, tokens, now, capacity, refill_rate, max_debt)
        if len(self._buckets) >= self.max_clients + (OVERFLOW in self._buckets) \
                and not self._evict(now, capacity, refill_rate):
            self.overflowed += 1
            if OVERFLOW in self._buckets:
                return self.take(OVERFLOW, tokens, now, capacity, refill_rate, max_debt)
            key = OVERFLOW
        available = float(capacity)
        shared = self._buckets.get(OVERFLOW)
        if shared is not None and key is not OVERFLOW:
            # A newcomer may have been one of the crowd that shared the overflow bucket: it starts
            # where that bucket stands, so leaving the crowd hands nobody a fresh allowance.
            available = min(shared.tokens + (now - shared.updated) * refill_rate, available)
        bucket = self._buckets[key] = _Bucket(available, now)
        if available - tokens >= -max_debt:
            bucket.tokens = available - tokens
        else:
            bucket.denied += 1
        return available

    def _evict(self, now: float, capacity: int, refill_rate: float) -> int:
        """Drops up to a tenth of the buckets, the ones refilled to capacity; how many it dropped.

        A scan that frees less than a tenth notes when enough buckets will be full to free the
        rest, and none runs before then: a flood of newcomers costs a scan per batch of room,
        not one per request (the newcomers meanwhile share the overflow bucket).
        """
        if now < self._next_full:
            return 0
        count = max(self.max_clients // 10, 1)
        full: list[str] = []
        pending: list[float] = []  # when each bucket not yet full will be
        crowd_gone = False
        for client, bucket in self._buckets.items():
            # Full again once its deficit has refilled: at updated + deficit / rate.
            refilled_at = bucket.updated + (capacity - bucket.tokens) / refill_rate
            if refilled_at > now:
                pending.append(refilled_at)
            elif client == OVERFLOW:  # the crowd is gone: no bucket to start newcomers from
                crowd_gone = True
            else:
                full.append(client)
                if len(full) == count:
                    break
        for client in full:
            del self._buckets[client]
        if crowd_gone:
            del self._buckets[OVERFLOW]
        self.evictions += len(full)
        short = count - len(full)
        self._next_full = heapq.nsmallest(short, pending)[-1] if short and len(pending) >= short else \
            (max(pending) if short and pending else 0.0)
        return len(full)

    def give_back(self, client: str, tokens: int, capacity: int) -> None:
        bucket = self._buckets.get(bucket_key(client))
        if bucket is not None:
            bucket.tokens = min(bucket.tokens + tokens, float(capacity))

    def forget(self, client: str | None = None) -> None:
        if client is None:
            self._buckets.clear()
        else:
            self._buckets.pop(bucket_key(client), None)

    def busiest(self, top: int, now: float, capacity: int, refill_rate: float) -> list[BucketState]:
        # The most limited first: most denials, then the emptiest bucket (as last stored).
        chosen = heapq.nsmallest(top, self._buckets.items(), key=lambda item: (-item[1].denied, item[1].tokens))
        return [
            BucketState(client, min(bucket.tokens + (now - bucket.updated) * refill_rate, float(capacity)),
                        bucket.denied)
            for client, bucket in chosen
        ]

    def __len__(self) -> int:
        return len(self._buckets)


# -- the policy ----------------------------------------------------------------------


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
_NO_BUCKETS: dict[str, _Bucket] = {}


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """A RateLimiter's settings and counters at one moment; `stats()` is its JSON.

    `allowed` and `denied` count requests since the limiter was made, `evictions` buckets
    dropped by the store since it was made, `overflowed` requests of newcomers that met a
    full table (they share one bucket); `active_buckets` is a gauge, and `busiest` the most
    limited buckets (most denials first).
    """

    capacity: int
    refill_rate: float
    max_clients: int
    allowed: int
    denied: int
    evictions: int
    active_buckets: int
    busiest: tuple[BucketState, ...]
    overflowed: int = 0

    @property
    def total(self) -> int:
        return self.allowed + self.denied

    @property
    def allow_rate(self) -> float:
        total = self.allowed + self.denied
        return self.allowed / total if total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rateLimit": self.capacity,
            "refillRate": self.refill_rate,
            "totalRequests": self.total,
            "allowedRequests": self.allowed,
            "deniedRequests": self.denied,
            "allowRate": self.allow_rate,
            "activeBuckets": self.active_buckets,
            "maxClients": self.max_clients,
            "evictions": self.evictions,
            "overflowed": self.overflowed,
            "buckets": {b.client: {"tokens": b.tokens, "denied": b.denied} for b in self.busiest},
        }


class RateLimiter:
    """Per-client token buckets of `capacity` tokens refilled at `refill_rate` tokens/s.

    The buckets live in `store` (a MemoryBucketStore of `max_clients` buckets unless
    given; `max_clients` is then the store's own). `clock` is injectable for tests and
    must be monotonic.
    """

    def __init__(
        self,
        capacity: int,
        refill_rate: float,
        *,
        max_clients: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        store: BucketStore | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if refill_rate <= 0:
            raise ValueError(f"refill_rate must be > 0, got {refill_rate}")
        if store is None:
            store = MemoryBucketStore(10_000 if max_clients is None else max_clients)
        elif max_clients is not None:
            raise ValueError("max_clients is the store's: give it to the store")
        self.capacity = capacity
        self.refill_rate = float(refill_rate)
        self._store = store
        self._take = store.take
        # A MemoryBucketStore's `take` is inlined in `try_acquire` for a known client (a call
        # costs a tenth of the hot path); every other store, and every new client, goes through `take`.
        self._known = store._buckets if type(store) is MemoryBucketStore else _NO_BUCKETS
        self._clock = clock
        # Converts the monotonic clock to epoch seconds for the X-RateLimit-Reset header
        # without a second clock read per call.
        self._epoch_offset = time.time() - clock()
        self._allowed = 0
        self._denied = 0

    @property
    def store(self) -> BucketStore:
        return self._store

    @property
    def max_clients(self) -> int:
        return self._store.max_clients

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
        capacity = self.capacity
        rate = self.refill_rate
        bucket = self._known.get(client)
        if bucket is None:
            available = self._take(client, tokens, now, capacity, rate)
            if available >= tokens:  # taken (available - tokens >= -0.0)
                available -= tokens
                self._allowed += 1
                return _decision((True, int(available), capacity, 0.0,
                                  now + self._epoch_offset + (capacity - available) / rate))
        else:  # MemoryBucketStore.take, inlined
            available = bucket.tokens + (now - bucket.updated) * rate
            if available > capacity:
                available = capacity
            bucket.updated = now
            if available >= tokens:
                available -= tokens
                bucket.tokens = available
                self._allowed += 1
                return _decision((True, int(available), capacity, 0.0,
                                  now + self._epoch_offset + (capacity - available) / rate))
            bucket.tokens = available
            bucket.denied += 1
        self._denied += 1
        return _decision((
            False, max(int(available), 0), capacity, (tokens - available) / rate,
            now + self._epoch_offset + (capacity - available) / rate,
        ))

    async def acquire(self, client: str, tokens: int = 1, max_wait: float = 0.0) -> Decision:
        """Like `try_acquire`, but waits when the tokens arrive within `max_wait` seconds.

        The tokens are reserved before sleeping (the bucket goes into debt), so waiting
        requests of one client are served in order and none is starved; a request whose
        wait would exceed `max_wait` is denied at once instead of queueing forever, and a
        cancelled wait gives its tokens back.
        """
        self._check_request(tokens)
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0, got {max_wait}")
        now = self._clock()
        capacity, rate = self.capacity, self.refill_rate
        max_debt = max_wait * rate
        available = self._take(client, tokens, now, capacity, rate, max_debt)
        if not available - tokens >= -max_debt:  # not taken (the store's test): the wait would be too long
            self._denied += 1
            return _decision((False, max(int(available), 0), capacity, (tokens - available) / rate,
                              now + self._epoch_offset + (capacity - available) / rate))
        self._allowed += 1
        wait = (tokens - available) / rate
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self._store.give_back(client, tokens, capacity)
                self._allowed -= 1
                raise
        return _decision((True, max(int(available - tokens), 0), capacity, 0.0,
                          now + self._epoch_offset + (capacity - available + tokens) / rate))

    def reset(self, client: str | None = None) -> None:
        """Forgets one client's bucket, or every bucket."""
        self._store.forget(client)

    def snapshot(self, top: int = 10) -> LimiterSnapshot:
        """The counters now, with the `top` most limited buckets."""
        store = self._store
        busiest = store.busiest(top, self._clock(), self.capacity, self.refill_rate) if top > 0 else []
        return LimiterSnapshot(
            capacity=self.capacity, refill_rate=self.refill_rate, max_clients=store.max_clients,
            allowed=self._allowed, denied=self._denied, evictions=store.evictions,
            active_buckets=len(store), busiest=tuple(busiest), overflowed=store.overflowed,
        )

    def stats(self, top: int = 10) -> dict[str, Any]:
        """The snapshot as plain numbers, with the `top` most denied clients under `buckets`."""
        return self.snapshot(top).to_dict()
