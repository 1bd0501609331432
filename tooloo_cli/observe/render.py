"""The observe tables: services, tracing, rate limits, caches, circuit breakers, pools.

    console.print(*tables(observations, console, width=80))

Every function takes the observations of one poll and returns a rich renderable; a
service that is down appears in the services table with its reason and is left out of
the module tables (it has nothing to report).

A number is never cut to fit a terminal: `fitted` drops a table's least useful columns
(each table names them, least useful first) until the numbers fit the width, and only
the columns of words (a reason, the most limited clients) wrap or give way. A figure that
is not a number, or too large to be one a service really has, reads "-" (poll.figure), and
a share is held to 0-100% (poll.share).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from tooloo_cli.observe.poll import Observation, figure, share
from tooloo_cli.units import duration

STATE_STYLES = {"up": "green", "down": "bold red", "timeout": "red", "error": "red", "malformed": "magenta",
                "n/a": "dim"}
BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red"}
BREAKER_ORDER = {"open": 0, "half_open": 1, "closed": 2}


class _Table(Table):
    """A table whose cells are taken as plain text: no markup or emoji parsing per cell,
    which is most of what a dashboard frame costs (styled cells come as Text).

    `optional`: the columns `fitted` may drop, least useful first; `words`: the columns
    that may wrap (text, never a number)."""

    optional: tuple[str, ...] = ()
    words: tuple[str, ...] = ()

    def add_row(self, *cells: RenderableType | None, **options: Any) -> None:
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), **options)


def new_table(title: str, *columns: str, optional: tuple[str, ...] = (), words: tuple[str, ...] = ()) -> Table:
    table = _Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                   collapse_padding=True)
    table.optional, table.words = optional, words
    for index, column in enumerate(columns):
        # rich squeezes the columns that may wrap first, and the others only when those are not enough.
        table.add_column(column, justify="left" if index == 0 or column in words else "right",
                         no_wrap=column not in words)
    return table


WORDS_AT_LEAST = 12  # a column of words keeps this many cells (or its natural width when narrower)


def _least_width(table: Table, console: Console, wrap: bool) -> int:
    """The narrowest `table` renders in without cutting a number: its natural width, less what the
    columns of words can give when they may wrap."""
    natural = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    if not wrap:
        return natural
    slack = 0
    for column in table.columns:
        if column.header in getattr(table, "words", ()):
            widest = max([Text(str(column.header)).cell_len,
                          *(cell.cell_len if isinstance(cell, Text) else len(str(cell)) for cell in column.cells)])
            slack += max(widest - WORDS_AT_LEAST, 0)
    return natural - slack


def fitted(table: RenderableType, console: Console, width: int, wrap: bool = True) -> RenderableType:
    """`table` without its least useful columns, as few dropped as let it fit `width` with every number
    whole (and, unless `wrap`, with no line wrapped either, as far as dropping columns can)."""
    if not isinstance(table, _Table):
        return table
    optional = list(table.optional)
    while optional and _least_width(table, console, wrap) > width:
        dropped = optional.pop(0)
        table.columns = [column for column in table.columns if column.header != dropped]
        for index, column in enumerate(table.columns):
            column._index = index  # rich measures a column's padding by its index
    return table


def compact(part: RenderableType, console: Console, width: int) -> RenderableType:
    """`part` fitted to `width` without wrapping, and a table without its blank first and last lines: a line
    is dear on a screen."""
    part = fitted(part, console, width, wrap=False)
    if isinstance(part, Table):
        part.show_edge = False
    return part


def _graded(value: float | None, text: str, warn: float, bad: float) -> Text:
    """`text` coloured by where `value` sits against the warning and bad thresholds (higher is worse); plain
    when `value` is not known."""
    if value is None:
        return Text(text)
    return Text(text, style="red" if value >= bad else "yellow" if value >= warn else "green")


def _cell(value: Any, spec: str = ",.0f") -> str:
    """A figure of a service's in `spec`; "-" for what poll.figure does not print (not a number, or huge)."""
    found = figure(value)
    return "-" if found is None else format(found, spec)


def _percent(found: float | None) -> str:
    """A share (poll.share) as a percentage; "-" when not known."""
    return "-" if found is None else f"{found:.1%}"


def _since(iso: Any) -> str:
    if not isinstance(iso, str):
        return "never"
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    return f"{duration(time.time() - moment)} ago"


def services_table(observations: list[Observation]) -> Table:
    table = new_table("Services", "service", "port", "state", "poll", "pid", "uptime", optional=("poll", "pid", "port"),
                      words=("state",))
    for o in observations:
        document = o.document or {}
        state = Text(o.state, style=STATE_STYLES.get(o.state, "white"))
        if o.reason:
            state.append(f" ({o.reason})", style="dim")
        table.add_row(o.name, str(o.port or "-"), state, f"{o.latency_ms:.1f} ms" if o.observable else "-",
                      _cell(document.get("pid"), ".0f"), duration(figure(document.get("uptime"))) if o.up else "-")
    return table


def tracing_table(observations: list[Observation]) -> Table:
    # The tracer's own req/s is its mean over the last minute: said so, beside --watch's rate of the last seconds.
    table = new_table("Tracing", "service", "total", "active", "sampled", "req/s 1m", "avg ms", "p50", "p95", "p99",
                      "errors", optional=("active", "sampled", "avg ms", "p50", "total"))
    for o in observations:
        tracer = o.module("tracer")
        if tracer is None:
            continue
        p99, error_rate = figure(tracer.get("p99Latency")), share(tracer.get("errorRate"))
        table.add_row(
            o.name, _cell(tracer.get("totalTraces")), _cell(tracer.get("activeTraces")),
            _cell(tracer.get("sampledTraces")), _cell(tracer.get("throughput"), ".1f"),
            _cell(tracer.get("avgLatency"), ".2f"), _cell(tracer.get("p50Latency"), ".2f"),
            _cell(tracer.get("p95Latency"), ".2f"), _graded(p99, _cell(p99, ".2f"), 100, 500),
            _graded(error_rate, _percent(error_rate), 0.01, 0.05),
        )
    return table


def limits_table(observations: list[Observation]) -> Table:
    table = new_table("Rate limiting", "service", "limit", "refill/s", "allowed", "denied", "allow rate", "clients",
                      "most limited", optional=("refill/s", "clients", "limit"), words=("most limited",))
    for o in observations:
        limiter = o.module("rateLimiter")
        if limiter is None:
            continue
        allow_rate = share(limiter.get("allowRate"))
        buckets = limiter.get("buckets") if isinstance(limiter.get("buckets"), dict) else {}
        # The service lists its buckets in no useful order: the most denied clients are the news.
        counted = ((figure(bucket.get("denied")), str(client)) for client, bucket in buckets.items()
                   if isinstance(bucket, dict))
        denied = sorted(((count, client) for count, client in counted if count is not None and count > 0),
                        key=lambda d: -d[0])
        limited = [f"{client} ({count:.0f})" for count, client in denied[:3]]
        table.add_row(
            o.name, _cell(limiter.get("rateLimit")), _cell(limiter.get("refillRate"), "g"),
            _cell(limiter.get("allowedRequests")), _cell(limiter.get("deniedRequests")),
            _graded(None if allow_rate is None else 1 - allow_rate, _percent(allow_rate), 0.1, 0.5),
            _cell(limiter.get("activeBuckets")),
            ", ".join(limited) or "-",
        )
    return table


def _clipped(text: str, width: int) -> str:
    """`text` in at most `width` characters: a long cell would squeeze every other column to nothing."""
    return text if len(text) <= width else text[:width - 1] + "…"


def shared_table(observations: list[Observation]) -> Table:
    """The link to Redis of each service that shares its state there ([stack] redis_url)."""
    table = new_table("Shared state (Redis)", "service", "state", "fallback", "by fallback", "error",
                      optional=("fallback",), words=("error",))
    for o in observations:
        redis = o.module("redis")
        if not isinstance(redis, dict):
            continue
        shared = redis.get("state") == "shared"
        table.add_row(o.name, Text("shared", style="green") if shared else Text("fallback", style="bold red"),
                      str(redis.get("fallback", "?")), _cell(redis.get("fallbackCalls")),
                      _clipped(str(redis.get("error") or "-"), 30))
    return table


def caches_table(observations: list[Observation]) -> Table:
    table = new_table("Caches", "service", "hits", "misses", "hit rate", "memory", "disk", "disk bytes",
                      optional=("disk bytes", "memory", "disk"))
    for o in observations:
        cache = o.module("cache")
        if cache is None:
            continue
        table.add_row(
            o.name, _cell(cache.get("hits")), _cell(cache.get("misses")),
            _percent(share(cache.get("hitRate"))), _cell(cache.get("memoryItems")), _cell(cache.get("diskItems")),
            _cell(cache.get("diskBytes")),
        )
    return table


def breakers_table(observations: list[Observation]) -> Table:
    table = new_table("Circuit breakers", "service", "breaker", "state", "calls", "failures", "rejected",
                      "last failure", optional=("calls", "rejected", "last failure"))
    rows = [(o.name, str(name), breaker) for o in observations
            for name, breaker in (o.module("circuitBreakers") or {}).items() if isinstance(breaker, dict)]
    # The open ones first (a stable sort: otherwise each service's in its order): they are the news,
    # and what a short terminal shows of a long table is its top.
    for service, name, breaker in sorted(rows, key=lambda row: BREAKER_ORDER.get(str(row[2].get("status")), 1)):
        state = str(breaker.get("status"))
        table.add_row(
            service, name, Text(state, style=BREAKER_STYLES.get(state, "white")),
            _cell(breaker.get("callCount")), _cell(breaker.get("failureCount")),
            _cell(breaker.get("rejectedCount")), _since(breaker.get("lastFailureTime")),
        )
    return table


def pools_lines(observations: list[Observation]) -> Text:
    """One line per pool and per query optimizer, where a service has them (none after the last: a blank
    line is a line of the screen)."""
    lines = []
    for o in observations:
        pool, optimizer = o.module("pool"), o.module("queryOptimizer")
        if pool is not None:
            lines.append(f"{o.name} pool: {_cell(pool.get('size'), '.0f')} open ({_cell(pool.get('inUse'), '.0f')} in "
                         f"use, {_cell(pool.get('waiting'), '.0f')} waiting), {_cell(pool.get('acquired'))} "
                         f"acquired, {_cell(pool.get('timeouts'), '.0f')} timeouts")
        if optimizer is not None:
            lines.append(f"{o.name} query optimizer: {_cell(optimizer.get('batchesExecuted'))} batches "
                         f"(avg {_cell(optimizer.get('avgBatchSize'), '.1f')}), "
                         f"{_cell(optimizer.get('singleflightShared'))} of "
                         f"{_cell(optimizer.get('singleflightCalls'))} calls shared")
    return Text("\n".join(lines))


def tables(observations: list[Observation], console: Console, width: int | None = None) -> list[RenderableType]:
    """Every table with something in it, in reading order, each fitted to `width` (the console's by default)."""
    width = console.width if width is None else width
    found: list[RenderableType] = [services_table(observations)]
    for table in (tracing_table(observations), limits_table(observations), shared_table(observations),
                  caches_table(observations), breakers_table(observations)):
        if table.row_count:
            found.append(table)
    pools = pools_lines(observations)
    if pools.plain:
        found.append(pools)
    return [fitted(part, console, width) for part in found]
