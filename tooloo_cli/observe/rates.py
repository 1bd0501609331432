"""Rates over the last few seconds, from the counters of successive observability documents.

    counters = Counters(window=5.0)
    counters.add(poll(targets, timeout))      # every interval
    counters.rate("web", "requests")         # requests/s over the last ~5 s; None before two polls
    counters.delta("budget", "denied")       # requests the limiter refused over that window
    counters.span("budget")                  # the seconds that window covers

A tracer's own `throughput` is a 60 s trailing mean: 2.5 req/s during a real 25 req/s
burst, 6.3 ten seconds after it stopped. What a dashboard must show is what happens now,
so the counters that only grow (`tracer.totalTraces`, `tracer.errorCount`,
`rateLimiter.deniedRequests`) are differenced between polls: the rate is the change from
the newest poll at least `window` seconds old (the oldest one while fewer seconds were
seen) to the latest. Polls are not counted as traffic by the services, so watching does
not change the rate it shows. A counter that goes down is a restarted service: its
window starts again at that poll. The window covers less than `window` seconds while fewer
were seen, and more when the polls are further apart: `span` says how much.
"""

from __future__ import annotations

import time
from collections import deque

from tooloo_cli.observe.poll import Observation, number, share

RATE_WINDOW = 5.0

# name -> (document section, field): counters that only grow while a service runs.
COUNTERS = {"requests": ("tracer", "totalTraces"), "errors": ("tracer", "errorCount"),
            "denied": ("rateLimiter", "deniedRequests")}


def _count(observation: Observation, section: str, field: str) -> float | None:
    module = observation.module(section)
    return number(module.get(field)) if module is not None else None


class Counters:
    """The counters of each service's last polls, over `window` seconds."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._seen: dict[str, deque[tuple[float, dict[str, float | None]]]] = {}

    def add(self, observations: list[Observation], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for o in observations:
            if not o.up:
                self._seen.pop(o.name, None)  # down, then up again: a new process, new counters
                continue
            counts = {name: _count(o, *where) for name, where in COUNTERS.items()}
            series = self._seen.setdefault(o.name, deque())
            last = series[-1][1] if series else None
            if last is not None and any(counts[name] is not None and last[name] is not None
                                        and counts[name] < last[name] for name in counts):
                series.clear()  # restarted between two polls
            series.append((now, counts))
            # Keep the newest poll that is at least `window` old, and what came after it.
            while len(series) > 2 and now - series[1][0] >= self.window:
                series.popleft()

    def span(self, name: str) -> float | None:
        """The seconds the window of service `name` covers; None before two polls."""
        series = self._seen.get(name)
        if not series or len(series) < 2 or series[-1][0] <= series[0][0]:
            return None
        return series[-1][0] - series[0][0]

    def delta(self, name: str, key: str) -> float | None:
        """How much counter `key` of `name` grew over the window; None before two polls."""
        if self.span(name) is None:
            return None
        series = self._seen[name]
        first, last = series[0][1][key], series[-1][1][key]
        # Two finite counters can still differ by more than a float holds (1e308 and -1e308).
        return None if first is None or last is None else number(last - first)

    def rate(self, name: str, key: str = "requests") -> float | None:
        """Counter `key` of service `name` per second over the window; None before two polls."""
        delta, span = self.delta(name, key), self.span(name)
        return None if delta is None or span is None else number(delta / span)

    def error_rate(self, name: str) -> float | None:
        """The share of the window's requests that failed, within [0, 1]; None when it saw none."""
        requests, errors = self.delta(name, "requests"), self.delta(name, "errors")
        if not requests or errors is None:
            return None
        return share(errors / requests)  # 1e308 errors in 0.001 requests: no inf%, no 1e311%
