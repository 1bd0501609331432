"""Token-bucket rate limiting per client: a policy over a store of buckets.

The policy (RateLimiter) decides: `capacity` tokens per client, refilled at
`refill_rate` tokens/s, one Decision per request with what the response headers need.
Where the buckets live is a BucketStore's business: MemoryBucketStore keeps them in this
process (the default). A SharedBucketStore keeps them for many processes (Redis, say): its
refill-and-take is one atomic round trip, awaited, so a limiter over one is asked with
`await limiter.check(client)` (which is `try_acquire` over any other store).

    limiter = RateLimiter(capacity=100, refill_rate=10)      # over a MemoryBucketStore
    decision = limiter.try_acquire("10.0.0.7")
    if not decision.allowed:
        reply_429(retry_after=decision.retry_after)
    limiter.snapshot().denied                                # counters, typed; stats() is their JSON
    decision = await RateLimiter(100, 10, store=shared).check("10.0.0.7")   # one round trip to `shared`

Buckets refill lazily from a monotonic clock when they are touched, so there is no timer
thread or task. MemoryBucketStore stays bounded in count and in bytes, and the limit neither
fails open nor shuts out newcomers: past `max_clients` buckets, room is made from buckets
that have refilled to capacity (up to a tenth in one pass), and while none has, from the
oldest, whose levels live on in a fixed table that a returning client's new bucket starts
from (see MemoryBucketStore); a client id longer than MAX_KEY_LENGTH characters is kept as
its digest (`bucket_key`), so no caller can grow a bucket with a long id. `tooloo bench
modules` measures it with 100k clients against 1k: the fraction allowed, and the memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import islice
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
    """Where the buckets live, for one policy: every operation takes the policy's figures (a
    Redis store needs them in its script), but which bucket may be dropped to make room is
    judged by them too, so limiters of different capacities keep stores of their own.

    `client` may be any length: a store keeps its keys bounded (with `bucket_key`).
    """

    max_clients: int
    """The most buckets the store keeps (it evicts or expires the rest)."""
    evictions: int
    """Buckets dropped to stay within `max_clients`, since the store was made."""
    overflowed: int
    """Requests of newcomers that met a table with no refilled bucket to drop, since it was made."""

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


# Cells of the table of forgotten buckets per bucket of `max_clients` (8 bytes each: 512 bytes a
# bucket, three times what the bucket itself costs), at most MAX_FORGOTTEN_CELLS (16 MB). With
# 10x more active clients than buckets, few clients find all three of their cells taken by a
# client forgotten later, and a crowd is allowed within ~2 % of what a table holding every
# client would allow (`tooloo bench modules` measures it; 32 cells: ~4 %, 16: ~12 %).
FORGOTTEN_CELLS_PER_BUCKET = 64
MAX_FORGOTTEN_CELLS = 1 << 21


class MemoryBucketStore:
    """Buckets in a dict of this process, at most `max_clients` of them.

    Room is made by dropping buckets that have refilled to capacity: they carry no
    information (a new bucket would hold the same), so no client gains by being forgotten.
    When every bucket is still limiting its client, the oldest tenth are forgotten all the
    same, but not their levels: each one's time of being full again goes into a fixed table
    of cells (FORGOTTEN_CELLS_PER_BUCKET x `max_clients`, made the first time it is needed),
    three cells a client chosen by its hash, each keeping the latest time of the clients in
    it. A new bucket starts at the level the earliest of its three cells allows: never above
    what the client's own forgotten bucket would hold now (the limit never fails open), and
    at capacity unless the client, or the few sharing all its cells, was forgotten while
    limited. The hash is Python's, salted per process (unless PYTHONHASHSEED is set), so no
    crowd can be aimed at another client's cells. `overflowed` counts the requests that met
    a table with nothing refilled to drop.
    """

    def __init__(self, max_clients: int = 10_000) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be at least 1, got {max_clients}")
        self.max_clients = max_clients
        self.evictions = 0
        self.overflowed = 0
        self._buckets: dict[str, _Bucket] = {}
        self._next_full = 0.0  # no bucket is full before then (see _evict)
        # When each cell's forgotten buckets are all full again (monotonic seconds); None until needed.
        self._forgotten: array[float] | None = None
        self._cells = min(FORGOTTEN_CELLS_PER_BUCKET * max_clients, MAX_FORGOTTEN_CELLS)

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
                  max_debt: float = 0.0) -> float:
        """`take` for a client not found under its own id (a newcomer, or a long id kept as its digest)."""
        key = bucket_key(client)
        if key is not client and key in self._buckets:
            return self.take(key, tokens, now, capacity, refill_rate, max_debt)
        if len(self._buckets) >= self.max_clients and not self._evict(now, capacity, refill_rate):
            self.overflowed += 1
            self._forget_oldest(now, capacity, refill_rate)
        available = float(capacity)
        forgotten = self._forgotten
        if forgotten is not None:
            # Each of the client's cells is at least its own time of being full again (if it was
            # forgotten while limited): the earliest of them is the closest to it, never earlier.
            digest, size = hash(key), self._cells
            full_at = min(forgotten[digest % size], forgotten[(digest >> 21) % size],
                          forgotten[(digest >> 42) % size])
            if full_at > now:
                available = capacity - (full_at - now) * refill_rate
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
        not one per request (meanwhile room is made by `_forget_oldest`, a tenth at a time).
        """
        if now < self._next_full:
            return 0
        count = max(self.max_clients // 10, 1)
        full: list[str] = []
        pending: list[float] = []  # when each bucket not yet full will be
        for client, bucket in self._buckets.items():
            # Full again once its deficit has refilled: at updated + deficit / rate.
            refilled_at = bucket.updated + (capacity - bucket.tokens) / refill_rate
            if refilled_at > now:
                pending.append(refilled_at)
            else:
                full.append(client)
                if len(full) == count:
                    break
        for client in full:
            del self._buckets[client]
        self.evictions += len(full)
        short = count - len(full)
        self._next_full = heapq.nsmallest(short, pending)[-1] if short and len(pending) >= short else \
            (max(pending) if short and pending else 0.0)
        return len(full)

    def _forget_oldest(self, now: float, capacity: int, refill_rate: float) -> None:
        """Drops the oldest tenth of the buckets, keeping in the table when each will be full again."""
        forgotten = self._forgotten
        if forgotten is None:
            forgotten = self._forgotten = array("d", [-math.inf]) * self._cells
        size = self._cells
        buckets = self._buckets
        oldest = list(islice(buckets.items(), max(self.max_clients // 10, 1)))
        for client, bucket in oldest:
            del buckets[client]
            full_at = bucket.updated + (capacity - bucket.tokens) / refill_rate
            if full_at > now:  # a full bucket says nothing a new one would not
                digest = hash(client)
                # Three cells from three stretches of the hash (21 bits each: up to 2M cells).
                for cell in (digest % size, (digest >> 21) % size, (digest >> 42) % size):
                    if forgotten[cell] < full_at:
                        forgotten[cell] = full_at
        self.evictions += len(oldest)

    def footprint(self) -> int:
        """Bytes the store holds (sys.getsizeof): its table, the buckets and their ids, and the
        table of forgotten buckets. Bounded by `max_clients`, however many clients there are."""
        size = sys.getsizeof(self._buckets) + sys.getsizeof(self._forgotten or ())
        for client, bucket in self._buckets.items():
            size += sys.getsizeof(client) + sys.getsizeof(bucket)
        return size

    def give_back(self, client: str, tokens: int, capacity: int) -> None:
        bucket = self._buckets.get(bucket_key(client))
        if bucket is not None:
            bucket.tokens = min(bucket.tokens + tokens, float(capacity))

    def forget(self, client: str | None = None) -> None:
        """Drops one client's bucket (what the table of forgotten buckets holds of it stays:
        clearing its cells would free the clients sharing them), or every bucket and that table."""
        if client is None:
            self._buckets.clear()
            self._forgotten = None
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


@runtime_checkable
class SharedBucketStore(BucketStore, Protocol):
    """A BucketStore many processes share. `take_shared` is its `take` as one awaited round trip, on
    the store's own clock (the processes' clocks need not agree); it never raises for the store's own
    failures: it answers from its fallback (a local bucket, or none: nothing available) and says so
    in `shared_state`."""

    async def take_shared(self, client: str, tokens: int, capacity: int, refill_rate: float) -> float:
        """As `take` with no debt: the tokens `client`'s bucket held, taken if at least `tokens`."""
        ...

    def shared_state(self) -> dict[str, Any]:
        """Whether the shared state is in use now, and if not, what answers instead and why."""
        ...


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
    full table with no refilled bucket to drop (room was made from buckets still limiting,
    whose levels the store keeps); `active_buckets` is a gauge, and `busiest` the most
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
        # A client not in `_known` is new to a MemoryBucketStore: its `take` would look it up again.
        self._take_unknown = store._take_new if type(store) is MemoryBucketStore else store.take
        self._shared = store if isinstance(store, SharedBucketStore) else None
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

    @property
    def shared(self) -> bool:
        """Whether the buckets are shared with other processes: ask with `await check(...)`."""
        return self._shared is not None

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
        bucket = self._known.get(client)
        if bucket is None:
            return self._decided(self._take_unknown(client, tokens, now, self.capacity, self.refill_rate),
                                 tokens, now)
        # MemoryBucketStore.take, inlined: the hot path of every request under /api.
        capacity = self.capacity
        rate = self.refill_rate
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
        return self._decided(available, tokens, now)

    async def check(self, client: str, tokens: int = 1) -> Decision:
        """`try_acquire`, through the shared store's one round trip when it is shared (see the module)."""
        shared = self._shared
        if shared is None:
            return self.try_acquire(client, tokens)
        if tokens != 1:
            self._check_request(tokens)
        available = await shared.take_shared(client, tokens, self.capacity, self.refill_rate)
        return self._decided(available, tokens, self._clock())

    def _decided(self, available: float, tokens: int, now: float) -> Decision:
        """The answer for a bucket that held `available` tokens at `now`: allowed (and taken, by the
        store) when that is at least `tokens`."""
        capacity, rate = self.capacity, self.refill_rate
        if available >= tokens:  # taken (available - tokens >= -0.0)
            available -= tokens
            self._allowed += 1
            return _decision((True, int(available), capacity, 0.0,
                              now + self._epoch_offset + (capacity - available) / rate))
        self._denied += 1
        return _decision((False, max(int(available), 0), capacity, (tokens - available) / rate,
                          now + self._epoch_offset + (capacity - available) / rate))

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
