"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams.

    result = asyncio.run(load("127.0.0.1", 3000, get("/health"), connections=8, seconds=3))
    result.requests_per_s, result.percentile(0.99)

httpx spends more CPU per request than the services do on a tiny route, so on a 2-core
machine it would measure itself; this client writes a prepared request and reads the
status line, the headers and a Content-Length body, nothing more.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RequestFactory = Callable[[], bytes]


def get(path: str, host: str = "bench") -> RequestFactory:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return lambda: request


def post_json(path: str, body: Callable[[], bytes], host: str = "bench") -> RequestFactory:
    def make() -> bytes:
        payload = body()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n")
        return head.encode() + payload

    return make


@dataclass
class LoadResult:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        """Answers outside 2xx."""
        return sum(count for status, count in self.statuses.items() if not 200 <= status < 300)

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return 0.0
        return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


async def _connection(host: str, port: int, make: RequestFactory, deadline: float, limit: int,
                      result: LoadResult, sent: list[int]) -> None:
    """One keep-alive connection; a dropped one is counted (status 0) and opened again."""
    while time.perf_counter() < deadline and sent[0] < limit:
        try:
            await _requests_on_one_connection(host, port, make, deadline, limit, result, sent)
        except (ConnectionError, asyncio.IncompleteReadError):
            result.statuses[0] += 1


async def _requests_on_one_connection(host: str, port: int, make: RequestFactory, deadline: float, limit: int,
                                      result: LoadResult, sent: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and sent[0] < limit:
            sent[0] += 1
            request = make()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[int(head[9:12])] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def load(host: str, port: int, make: RequestFactory, *, connections: int = 8, seconds: float = 3.0,
               limit: int = 10_000_000) -> LoadResult:
    """Requests from `connections` keep-alive connections for `seconds` (or until `limit` are sent)."""
    result = LoadResult(seconds=0.0)
    sent = [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(host, port, make, deadline, limit, result, sent) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


def run(coroutine: Any) -> Any:
    """Runs a benchmark coroutine on uvloop, the services' own loop (asyncio where it is missing)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
