"""Helpers shared by the Phase 6 checks.

    run(coroutine)                 # runs a coroutine on a fresh event loop
    await settle()                 # lets other tasks take a few steps
    clock = ManualClock(100.0)     # a clock the check advances by hand
    clock.advance(2.5)
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on a fresh event loop."""
    return asyncio.run(coroutine)


async def settle(rounds: int = 5) -> None:
    """Lets other tasks run a few steps without any real waiting."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class ManualClock:
    """A clock that moves only when told to: deterministic TTLs, refills and timeouts."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
