"""The observe tables: services, tracing, rate limits, caches, circuit breakers, pools.

    console.print(*tables(observations))

Every function takes the observations of one poll and returns a rich renderable; a
service that is down appears in the services table with its reason and is left out of
the module tables (it has nothing to report).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from tooloo_cli.observe.poll import Observation
from tooloo_cli.units import duration

STATE_STYLES = {"up": "green", "down": "bold red", "timeout": "red", "error": "red", "malformed": "magenta",
                "n/a": "dim"}
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red"}


class _Table(Table):
    """A table whose cells are taken as plain text: no markup or emoji parsing per cell,
    which is most of what a dashboard frame costs (styled cells come as Text)."""

    def add_row(self, *cells: RenderableType | None, **options: Any) -> None:
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), **options)


def new_table(title: str, *columns: str) -> Table:
    table = _Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                   collapse_padding=True)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=True)
    return table


def _graded(value: float, text: str, warn: float, bad: float) -> Text:
    """`text` coloured by where `value` sits against the warning and bad thresholds (higher is worse)."""
    return Text(text, style="red" if value >= bad else "yellow" if value >= warn else "green")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _since(iso: Any) -> str:
    if not isinstance(iso, str):
        return "never"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    return f"{duration(time.time() - moment)} ago"


def services_table(observations: list[Observation]) -> Table:
    table = new_table("Services", "service", "port", "state", "poll", "pid", "uptime")
    for o in observations:
        document = o.document or {}
        state = Text(o.state, style=STATE_STYLES.get(o.state, "white"))
        if o.reason:
            state.append(f" ({o.reason})", style="dim")
        table.add_row(o.name, str(o.port or "-"), state, f"{o.latency_ms:.1f} ms" if o.observable else "-", str(document.get("pid", "-")),
                      duration(document.get("uptime")) if o.up else "-")
    return table


def tracing_table(observations: list[Observation]) -> Table:
    table = new_table("Tracing", "service", "total", "active", "sampled", "req/s", "avg ms", "p50", "p95", "p99",
                   "errors")
    for o in observations:
        tracer = o.module("tracer")
        if tracer is None:
            continue
        n = {key: _number(tracer.get(key)) for key in ("totalTraces", "activeTraces", "sampledTraces", "throughput",
                                                      "avgLatency", "p50Latency", "p95Latency", "p99Latency",
                                                      "errorRate")}
        table.add_row(
            o.name, f"{n['totalTraces']:,.0f}", f"{n['activeTraces']:.0f}", f"{n['sampledTraces']:,.0f}",
            f"{n['throughput']:.1f}", f"{n['avgLatency']:.2f}", f"{n['p50Latency']:.2f}", f"{n['p95Latency']:.2f}",
            _graded(n["p99Latency"], f"{n['p99Latency']:.2f}", 100, 500),
            _graded(n["errorRate"], f"{n['errorRate']:.1%}", 0.01, 0.05),
        )
    return table


def limits_table(observations: list[Observation]) -> Table:
    table = new_table("Rate limiting", "service", "limit", "refill/s", "allowed", "denied", "allow rate", "clients",
                   "most limited")
    for o in observations:
        limiter = o.module("rateLimiter")
        if limiter is None:
            continue
        allow_rate = _number(limiter.get("allowRate"))
        buckets = limiter.get("buckets") if isinstance(limiter.get("buckets"), dict) else {}
        # The service lists its buckets in no useful order: the most denied clients are the news.
        denied = sorted(((_number(bucket.get("denied")), str(client)) for client, bucket in buckets.items()
                         if isinstance(bucket, dict) and _number(bucket.get("denied")) > 0), key=lambda d: -d[0])
        limited = [f"{client} ({count:.0f})" for count, client in denied[:3]]
        table.add_row(
            o.name, f"{_number(limiter.get('rateLimit')):,.0f}", f"{_number(limiter.get('refillRate')):g}",
            f"{_number(limiter.get('allowedRequests')):,.0f}", f"{_number(limiter.get('deniedRequests')):,.0f}",
            _graded(1 - allow_rate, f"{allow_rate:.1%}", 0.1, 0.5), f"{_number(limiter.get('activeBuckets')):,.0f}",
            ", ".join(limited) or "-",
        )
    return table


def _clipped(text: str, width: int) -> str:
    """`text` in at most `width` characters: a long cell would squeeze every other column to nothing."""
    return text if len(text) <= width else text[:width - 1] + "…"


def shared_table(observations: list[Observation]) -> Table:
    """The link to Redis of each service that shares its state there ([stack] redis_url)."""
    table = new_table("Shared state (Redis)", "service", "state", "fallback", "by fallback", "error")
    for o in observations:
        redis = o.module("redis")
        if not isinstance(redis, dict):
            continue
        shared = redis.get("state") == "shared"
        table.add_row(o.name, Text("shared", style="green") if shared else Text("fallback", style="bold red"),
                      str(redis.get("fallback", "?")), f"{_number(redis.get('fallbackCalls')):,.0f}",
                      _clipped(str(redis.get("error") or "-"), 30))
    return table


def caches_table(observations: list[Observation]) -> Table:
    table = new_table("Caches", "service", "hits", "misses", "hit rate", "memory", "disk", "disk bytes")
    for o in observations:
        cache = o.module("cache")
        if cache is None:
            continue
        hit_rate = _number(cache.get("hitRate"))
        table.add_row(
            o.name, f"{_number(cache.get('hits')):,.0f}", f"{_number(cache.get('misses')):,.0f}",
            f"{hit_rate:.1%}", f"{_number(cache.get('memoryItems')):,.0f}", f"{_number(cache.get('diskItems')):,.0f}",
            f"{_number(cache.get('diskBytes')):,.0f}",
        )
    return table


def breakers_table(observations: list[Observation]) -> Table:
    table = new_table("Circuit breakers", "service", "breaker", "state", "calls", "failures", "rejected",
                   "last failure")
    for o in observations:
        breakers = o.module("circuitBreakers") or {}
        for name, breaker in breakers.items():
            if not isinstance(breaker, dict):
                continue
            state = str(breaker.get("status"))
            table.add_row(
                o.name, str(name), Text(state, style=BREAKER_STYLES.get(state, "white")),
                f"{_number(breaker.get('callCount')):,.0f}", f"{_number(breaker.get('failureCount')):,.0f}",
                f"{_number(breaker.get('rejectedCount')):,.0f}", _since(breaker.get("lastFailureTime")),
            )
    return table


def pools_lines(observations: list[Observation]) -> Text:
    """One line per pool and per query optimizer, where a service has them."""
    lines = Text()
    for o in observations:
        pool, optimizer = o.module("pool"), o.module("queryOptimizer")
        if pool is not None:
            lines.append(f"{o.name} pool: {_number(pool.get('size')):.0f} open ({_number(pool.get('inUse')):.0f} in "
                         f"use, {_number(pool.get('waiting')):.0f} waiting), {_number(pool.get('acquired')):,.0f} "
                         f"acquired, {_number(pool.get('timeouts')):.0f} timeouts\n")
        if optimizer is not None:
            lines.append(f"{o.name} query optimizer: {_number(optimizer.get('batchesExecuted')):,.0f} batches "
                         f"(avg {_number(optimizer.get('avgBatchSize')):.1f}), "
                         f"{_number(optimizer.get('singleflightShared')):,.0f} of "
                         f"{_number(optimizer.get('singleflightCalls')):,.0f} calls shared\n")
    return lines


def tables(observations: list[Observation]) -> list[RenderableType]:
    """Every table with something in it, in reading order."""
    found: list[RenderableType] = [services_table(observations)]
    for table in (tracing_table(observations), limits_table(observations), shared_table(observations),
                  caches_table(observations), breakers_table(observations)):
        if table.row_count:
            found.append(table)
    pools = pools_lines(observations)
    if pools.plain:
        found.append(pools)
    return found
