"""Singleflight: identical in-flight calls share one execution and its outcome.

    flight = SingleFlight()
    text = await flight.do(("prompt", prompt), lambda: provider.complete(prompt))

The shared call runs as its own task, so one caller giving up does not cancel it for
the others; a result is not kept once the call has finished (that is the cache's job).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self.calls = 0
        self.shared = 0

    async def do(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """Awaits `call()`, or the call with the same `key` already in flight."""
        self.calls += 1
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._run(key, call))
            self._inflight[key] = future
            future.add_done_callback(_retrieve)
        else:
            self.shared += 1
        return await asyncio.shield(future)

    async def _run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        finally:
            # Forgotten as the call finishes, not a loop step later: a caller arriving
            # after the result is known starts a fresh call instead of sharing a stale one.
            self._inflight.pop(key, None)

    async def wait(self) -> None:
        """Returns once no call is in flight (their outcomes stay with their callers)."""
        while self._inflight:
            await asyncio.wait(list(self._inflight.values()))

    def __len__(self) -> int:
        return len(self._inflight)


def _retrieve(done: asyncio.Future[Any]) -> None:
    """Marks the outcome as seen, so a call whose callers all gave up logs no warning."""
    if not done.cancelled():
        done.exception()
