"""Latency histograms: Prometheus-style cumulative buckets with fixed upper bounds in seconds.

    buckets = LatencyBuckets()
    buckets.observe(0.003)                  # one acquire that waited 3 ms
    histogram = buckets.snapshot()          # a frozen Histogram
    histogram.counts[histogram.bounds.index(0.005)]   # 1: observations <= 5 ms
    histogram.buckets[-1]                   # (inf, 1): +Inf holds every observation

A Histogram is cumulative twice over: `counts[i]` is the number of observations at most
`bounds[i]` (so counts never decrease and the last, under +Inf, equals `count`), and every
figure covers the whole life of its recorder. Recording is one `bisect` and an increment,
cheap enough for every request; the cumulative sums are made only by `snapshot()`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

# Prometheus' default buckets with 1 ms and 2.5 ms added, for in-process work.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf,
)
# The finite bounds in integer nanoseconds, for recorders that time with perf_counter_ns:
# bisect_left(LATENCY_BOUNDS_NS, ns) is the index of the bucket of `ns`.
LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(round(bound * 1e9) for bound in LATENCY_BOUNDS[:-1])
_FINITE_BOUNDS = LATENCY_BOUNDS[:-1]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Observations by upper bound: `counts[i]` observations were <= `bounds[i]` seconds.

    `bounds` ascend and end with +Inf; `sum` is in seconds; `count` is the number of
    observations (equal to `counts[-1]`).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts) or not self.bounds or self.bounds[-1] != math.inf:
            raise ValueError("a histogram needs one count per bound and +Inf as its last bound")
        if self.counts[-1] != self.count:
            raise ValueError(f"the +Inf bucket holds {self.counts[-1]} observations, not count={self.count}")

    @classmethod
    def from_buckets(cls, per_bucket: list[int] | tuple[int, ...], total: float,
                     bounds: tuple[float, ...] = LATENCY_BOUNDS) -> Histogram:
        """The histogram of non-cumulative counts (one per bound), whose values add up to `total` seconds."""
        running, counts = 0, []
        for number in per_bucket:
            running += number
            counts.append(running)
        return cls(bounds, tuple(counts), total, running)

    @property
    def buckets(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, cumulative count) pairs, as Prometheus' `le` buckets."""
        return tuple(zip(self.bounds, self.counts))

    @property
    def mean(self) -> float:
        """The mean observation in seconds (0.0 for none)."""
        return self.sum / self.count if self.count else 0.0


class LatencyBuckets:
    """A recorder of durations in seconds over LATENCY_BOUNDS."""

    __slots__ = ("_counts", "sum")

    def __init__(self) -> None:
        self._counts = [0] * len(LATENCY_BOUNDS)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(_FINITE_BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self._counts)

    def snapshot(self) -> Histogram:
        return Histogram.from_buckets(self._counts, self.sum)
