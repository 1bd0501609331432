"""One leader at a time among a service's replicas: a lease in Redis, renewed by whoever holds it.

    link = RedisLink("unix:///run/redis.sock")            # services/shared.py
    lease = Lease(link, "coach")                          # holder: "host:pid:random", ttl LEASE_SECONDS
    await lease.start()                                   # one attempt now, then renewals in the background
    if lease.is_leader:                                   # checked before each piece of work only one may do
        ...
    await lease.wait_leading()                            # a standby parks here until it takes over
    lease.state()                                         # {"leader": ..., "leaderSince": ..., "holder": ...}
    await lease.stop()                                    # shutdown: hands the lease over at once

Contract:

- The lease is the key `tooloo:lease:NAME`, holding the holder's id, taken with
  `SET key holder NX PX ttl`: whoever set it leads until it expires. The leader renews it
  every ttl/3 (a Lua compare-and-PEXPIRE: only while the key still names it; every ttl/10
  after a renewal failed); a standby tries to take it every ttl/10, so a leader that dies
  is replaced within ttl + ttl/10 of its last renewal. `stop()` deletes the key only while it names this holder (a Lua
  compare-and-delete), and a standby takes over within ttl/10.
- Leading is judged by this process's own clock: a lease taken or renewed by a command
  sent at t holds until t + ttl (Redis started its expiry no earlier than t), and
  `is_leader` turns false then by itself, renewed or not. So while Redis is unreachable
  (RedisUnavailable: down, hung, the link's breaker open) the leader leads only until its
  lease would have expired — it cannot know whether another took over — and no standby
  becomes leader (nothing can be taken): for that time nobody leads. Redis back, the
  first to take the free key leads. [stack] redis_fallback does not apply: "local" would
  make every replica a leader, which is what the lease exists to prevent.
- A command that timed out may still have been carried out: the next attempt renews a
  key that turns out to name this holder, so such a lease is not wasted until it expires.
- Work begun while leading is not interrupted when the lease runs out: a caller that
  checks `is_leader` before each short piece of work (a coach's round) may overlap the
  next leader's by that one piece, at most.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import secrets
import socket
import time
from typing import Any

from tooloo_cli.services.service import UNAVAILABLE
from tooloo_cli.services.shared import RedisLink, RedisUnavailable

logger = logging.getLogger(__name__)

LEASE_SECONDS = 3.0  # how long a lease holds unrenewed: a dead leader is replaced within about this
KEY_PREFIX = "tooloo:lease:"

# KEYS[1] the lease; ARGV the holder, the ttl in ms. 1 when it named the holder and was renewed, else 0.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] the lease; ARGV the holder. 1 when it named the holder and was deleted, else 0.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def unique_holder() -> str:
    """`hostname:pid:random`: names this process among every replica's, on every machine, across restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """Leadership of `name` among the processes that share `link`'s Redis (see the module)."""

    def __init__(self, link: RedisLink, name: str = "coach", holder: str | None = None,
                 ttl: float = LEASE_SECONDS) -> None:
        if ttl < 0.001:
            raise ValueError(f"a lease's ttl is in seconds and at least 0.001 (Redis counts in ms), got {ttl}")
        self.link = link
        self.name = name
        self.key = KEY_PREFIX + name
        self.holder = holder or unique_holder()
        self.ttl = ttl
        self._since: float | None = None  # epoch seconds this holder began leading, until it stands down
        self.last_error: str | None = None  # why the last attempt could not reach Redis, until one does
        self._valid_until: float | None = None  # monotonic: when the lease runs out by this process's clock
        self._changed = asyncio.Event()  # set whenever an attempt ends, to wake `wait_leading`
        self._task: asyncio.Task[None] | None = None
        self._renew = link.client.register_script(RENEW)
        self._release = link.client.register_script(RELEASE)

    @property
    def is_leader(self) -> bool:
        return self._valid_until is not None and time.monotonic() < self._valid_until

    @property
    def leader_since(self) -> float | None:
        """When this holder began leading (epoch seconds), while it leads; else None."""
        return self._since if self.is_leader else None

    async def attempt(self) -> bool:
        """Renews the lease, or takes it if free; whether this holder leads now (False while Redis is away)."""
        sent = time.monotonic()
        ttl_ms = int(self.ttl * 1000)
        try:
            # Renewal first, for a standby too: a SET that timed out may have been carried out (see the module).
            held = bool(await self.link.call(self._renew, keys=[self.key], args=[self.holder, ttl_ms]))
            if not held:
                held = bool(await self.link.call(self.link.client.set, self.key, self.holder, nx=True, px=ttl_ms))
        except RedisUnavailable as exc:
            # Neither taken nor lost: the lease we may hold runs out by our clock, as `is_leader` says.
            self.last_error = str(exc)
            self._note(self.is_leader, f"its lease ran out while Redis is unreachable ({exc})")
            return self.is_leader
        self.last_error = None
        self._valid_until = sent + ttl_ms / 1000 if held else None
        self._note(held, "another holder has the lease")
        return held

    def _note(self, leading: bool, why: str) -> None:
        """Logs a change of leadership (`why` it stands down), and wakes `wait_leading`."""
        if leading and self._since is None:
            self._since = time.time()
            logger.info("%s: %s leads (lease %s, %.1f s)", self.name, self.holder, self.key, self.ttl)
        elif not leading and self._since is not None:
            self._since = None
            logger.warning("%s: %s stands down: %s", self.name, self.holder, why)
        self._changed.set()

    async def _keep(self) -> None:
        # Ends when `stop` forgets it, not only when cancelled: Python 3.11's asyncio.wait_for, which
        # redis-py sends commands through, loses a cancellation that lands as the send completes.
        while self._task is asyncio.current_task():
            # A leader renews every ttl/3, so that two renewals can fail before its lease runs out; after
            # a failure, and as a standby, it tries every ttl/10.
            calm = self.is_leader and self.last_error is None
            await asyncio.sleep(self.ttl / 3 if calm else self.ttl / 10)
            await self.attempt()

    async def wait_leading(self) -> None:
        """Returns once this holder leads (at once if it does)."""
        while not self.is_leader:
            self._changed.clear()
            await self._changed.wait()

    async def start(self) -> None:
        """One attempt now (a replica alone leads as soon as it starts), then the background renewals."""
        if self._task is not None:
            return
        await self.attempt()
        # A fresh context: the renewals belong to no request's trace.
        self._task = asyncio.create_task(self._keep(), name=f"lease-{self.name}", context=contextvars.Context())

    async def stop(self, release: bool = True) -> None:
        """Stops renewing and, with `release`, frees the lease if it is still this holder's, for a standby to
        take at once. `release=False` is what a process that dies does: the lease runs out in its time."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        if release and self._valid_until is not None:
            try:
                await self.link.call(self._release, keys=[self.key], args=[self.holder])
            except RedisUnavailable as exc:
                logger.warning("%s: could not release the lease %s (%s); it runs out within %.1f s",
                               self.name, self.key, exc, self.ttl)
        self._valid_until = None
        if self._since is not None:  # an orderly end, not news: logged as such, and not again by `_note`
            logger.info("%s: %s stops leading", self.name, self.holder)
            self._since = None
        self._changed.set()

    def state(self, detail: bool = True) -> dict[str, Any]:
        """What the observability document shows: who this is, whether it leads, since when, for how long;
        without `detail`, no error text (it may name the server)."""
        left = None if self._valid_until is None else max(self._valid_until - time.monotonic(), 0.0)
        error = self.last_error if detail or self.last_error is None else UNAVAILABLE
        return {"key": self.key, "holder": self.holder, "leader": self.is_leader, "leaderSince": self.leader_since,
                "ttlSeconds": self.ttl, "validForSeconds": left, "error": error}
