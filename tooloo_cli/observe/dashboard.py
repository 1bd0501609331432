"""`tooloo observe --watch`: a live dashboard laid out for the terminal it has.

    code = watch(targets, interval=1.0, timeout=0.5, console=Console())   # until q, Ctrl-C or SIGTERM

Every frame is exactly the terminal's size:

    tooloo observe  updated 15:44:02, every 1 s  7/8 up               the header
    service  state  req/s  p99 ms  errors  attention                   the summary: always first, fits 80 columns
    web      up      25.1   110.6    0.0%  breaker budget open        (what is open, failing or refusing, in red)
    …
    Throughput                     Circuit breakers                    the detail sections, in as many columns
    …                              …                                   of ~80 cells as the width holds
    q quit  tab next  1 throughput 2 errors 3 tracing …                the keys; what is on screen highlighted

The detail sections (1 throughput, 2 errors, 3 tracing and services, 4 rate limits and
shared state, 5 caches and pools, 6 circuit breakers) are shown in that order from the
one chosen, as many as fit whole; `tab` goes on with the first that did not, `1`-`6`
start at a section. A table taller than the room left is cut at the bottom, saying how
many lines it keeps back; the breakers list open ones first. Off a terminal (a pipe, a
file), each frame is printed whole as it is made, everything in one column, and no key is
read. The header's time is the poll's, not the frame's; it says "polling…" until the first
poll ends.

req/s is the rate over the last few seconds (rates.py), not the tracer's minute mean, and
"-" while a service is down or before two polls; each throughput sparkline has a fixed
width (one cell per 3 s of the last minute, blank before the first poll and while nothing
was known, a service down) and one scale for the whole table, so two rows compare.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime

from rich.console import Console, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from tooloo_cli.observe.poll import Observation, Target, figure, number, poll
from tooloo_cli.observe.rates import RATE_WINDOW, Counters
from tooloo_cli.observe.render import (
    STATE_STYLES,
    breakers_table,
    caches_table,
    compact,
    limits_table,
    new_table,
    pools_lines,
    services_table,
    shared_table,
    tracing_table,
)
from tooloo_cli.observe.terminal import Line, Lines, cut, render, run
from tooloo_cli.units import duration

BLOCKS = "▁▂▃▄▅▆▇█"
WINDOW = 60.0  # the sparklines' minute
SPARK_WIDTH = 20  # cells: one per WINDOW / SPARK_WIDTH seconds
SEEN_TRACES = 500  # error trace ids remembered; a document shows only each service's last few traces
COLUMN_WIDTH = 78  # the detail sections are laid out in columns of at least this many cells
GAP = 2
SECTIONS = ("throughput", "errors", "tracing", "limits", "caches", "breakers")
SECTION_KEYS = {str(index + 1): index for index in range(len(SECTIONS))}  # "1".."6": not any digit ("²", "١")
EMPTY = ("Throughput", "Recent errors", "Tracing", "Rate limiting", "Caches", "Circuit breakers")  # "…: none"


def sparkline(values: list[float | None], top: float | None = None) -> str:
    """Block characters scaled to `top` (the largest value by default; a flat line when all are 0);
    None is a blank cell, NaN and infinity count as 0."""
    finite = [None if value is None else value if math.isfinite(value) else 0.0 for value in values]
    known = [value for value in finite if value is not None]
    top = max(known, default=0.0) if top is None else top
    cells = []
    for value in finite:
        if value is None:
            cells.append(" ")
        elif top <= 0:
            cells.append(BLOCKS[0])
        else:
            cells.append(BLOCKS[max(min(int(value / top * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1), 0)])
    return "".join(cells)


class History:
    """What the dashboard remembers between polls: the counters, each service's req/s over the
    last minute, and the recent errors."""

    def __init__(self, errors: int = 8, window: float = RATE_WINDOW) -> None:
        self.counters = Counters(window)
        self.throughput: dict[str, deque[tuple[float, float | None]]] = {}  # None: no rate (down, just up)
        self.errors: deque[tuple[float, str, str, str]] = deque(maxlen=errors)  # when, service, what, trace id
        self.now = 0.0  # the monotonic time of the last poll
        self._last_reason: dict[str, str | None] = {}
        self._seen_traces: dict[str, None] = {}  # an ordered set: the oldest id is evicted first

    def add(self, observations: list[Observation], now: float | None = None) -> None:
        self.now = time.monotonic() if now is None else now
        wall = time.time()
        self.counters.add(observations, self.now)
        for o in observations:
            if not o.observable:
                continue
            sample(self.throughput.setdefault(o.name, deque()), self.now, self.counters.rate(o.name))
            if o.reason != self._last_reason.get(o.name) and o.reason is not None:
                self.errors.append((wall, o.name, f"{o.state}: {o.reason}", ""))
            self._last_reason[o.name] = o.reason
            tracer = o.module("tracer")
            spans = tracer.get("spans") if tracer else None
            for trace in spans if isinstance(spans, list) else []:
                if not isinstance(trace, dict) or trace.get("status") != "error":
                    continue
                trace_id = str(trace.get("traceId"))
                if trace_id in self._seen_traces:
                    continue
                self._seen_traces[trace_id] = None
                if len(self._seen_traces) > SEEN_TRACES:
                    del self._seen_traces[next(iter(self._seen_traces))]
                self.errors.append((wall, o.name, f"{trace.get('name')} failed", trace_id))

    def trend(self, name: str) -> list[float | None]:
        """The sparkline cells of service `name`'s req/s over the last minute."""
        return trend(self.throughput.get(name, ()), self.now)


def sample(series: deque[tuple[float, float | None]], now: float, value: float | None) -> None:
    """Adds (now, value) to `series` and forgets what is older than the sparklines' minute; None is a
    gap (nothing known: a service down), where a trend stops."""
    series.append((now, value))
    while series and now - series[0][0] > WINDOW:
        series.popleft()


def trend(series: Iterable[tuple[float, float | None]], now: float, cells: int = SPARK_WIDTH,
          window: float = WINDOW) -> list[float | None]:
    """`cells` cells of the `window` seconds before `now`, oldest first, of (moment, value) samples: each
    cell the highest value seen in its seconds (a burst is what a trend must not lose); a cell no sample
    fell in (a long interval) carries on the last sample before it, so it is blank (None) before the first
    sample and after a gap (a None sample) until the next value."""
    span = window / cells
    start = now - window
    found: list[float | None] = [None] * cells
    last: list[float | None] = [None] * cells  # each cell's latest sample: what an empty cell after it carries
    sampled = [False] * cells
    for moment, value in series:
        if moment <= start:
            continue
        index = min(max(math.ceil((moment - start) / span) - 1, 0), cells - 1)
        sampled[index], last[index] = True, value
        if value is not None:
            found[index] = max(value, found[index] or 0.0)
    for index in range(1, cells):
        if not sampled[index]:
            found[index] = last[index] = last[index - 1]
    return found


def per_second(value: float | None) -> str:
    """A req/s cell: "-" when there is no rate, or none a service could have (poll.figure)."""
    found = figure(value)
    return "-" if found is None else f"{found:.1f}"


def attention(o: Observation, history: History) -> list[Text]:
    """What needs a look in service `o`: a failing poll, a breaker not closed, refusals, a lost Redis."""
    found = []
    if o.observable and not o.up:
        found.append(Text(o.reason or o.state, style="bold red"))
    for name, breaker in (o.module("circuitBreakers") or {}).items():
        status = breaker.get("status") if isinstance(breaker, dict) else None
        if status == "open":
            found.append(Text(f"breaker {name} open", style="bold red"))
        elif status == "half_open":
            found.append(Text(f"breaker {name} half-open", style="yellow"))
    denied, span = figure(history.counters.delta(o.name, "denied")), history.counters.span(o.name)
    if denied and span is not None:  # over the seconds the counters really span, not the window asked for
        seconds = duration(span) if span >= 1 else f"{span:.1f}s"
        found.append(Text(f"limiter refused {denied:,.0f} in {seconds}", style="yellow"))
    redis = o.module("redis")
    if redis is not None and redis.get("state") not in (None, "shared"):
        found.append(Text("redis lost: local fallback", style="bold red"))
    waiting = figure((o.module("pool") or {}).get("waiting"))
    if waiting is not None and waiting > 0:
        found.append(Text(f"pool: {waiting:.0f} waiting", style="yellow"))
    return found


def summary_table(observations: list[Observation], history: History) -> Table:
    """One row per service: up, req/s now, p99, errors now, and whatever needs a look."""
    table = new_table("", "service", "state", "req/s", "p99 ms", "errors", "attention", words=("attention",))
    for o in observations:
        tracer = o.module("tracer") or {}
        issues = attention(o, history)
        # No request traced yet: no latency to speak of (the tracer says 0).
        p99 = figure(tracer.get("p99Latency")) if number(tracer.get("totalTraces")) else None
        error_rate = history.counters.error_rate(o.name)  # None: not known (a first poll, no requests, no count)
        errors = "-" if error_rate is None else Text(
            f"{error_rate:.1%}", style="red" if error_rate >= 0.05 else "yellow" if error_rate >= 0.01 else "green")
        table.add_row(
            Text(o.name, style="bold red" if any(issue.style == "bold red" for issue in issues) else ""),
            Text(o.state, style=STATE_STYLES.get(o.state, "white")),
            per_second(history.counters.rate(o.name)),  # None when down: the counters forget a service down
            Text(f"{p99:.1f}", style="red" if p99 >= 500 else "yellow" if p99 >= 100 else "")
            if p99 is not None and o.up else "-",
            errors,
            Text(", ").join(issues) if issues else Text("-", style="dim"),
        )
    return table


def throughput_table(history: History) -> Table:
    table = new_table("Throughput", "service", "req/s", "peak", "last minute")
    table.columns[-1].justify = "left"  # the newest cell on the right, blank cells before the first poll
    trends = {name: history.trend(name) for name in history.throughput}
    top = max((value for cells in trends.values() for value in cells if value is not None), default=0.0)
    for name, series in history.throughput.items():
        peak = max((rate for _, rate in series if rate is not None), default=None)
        # req/s is the rate now ("-" when down), not the last one the minute kept.
        table.add_row(name, per_second(history.counters.rate(name)), per_second(peak),
                      Text(sparkline(trends[name], top), style="cyan"))
    return table


def errors_table(history: History) -> RenderableType:
    if not history.errors:
        return Text("Recent errors: none", style="dim")
    # The trace id has a column of its own, dropped first: a row that wraps costs a line of the screen.
    table = new_table("Recent errors", "when", "service", "what", "trace", optional=("trace",), words=("what",))
    table.columns[1].justify = table.columns[-1].justify = "left"  # names and ids, not numbers
    for moment, name, what, trace in reversed(history.errors):
        table.add_row(datetime.fromtimestamp(moment).strftime("%H:%M:%S"), name, Text(what, style="red"), trace or "-")
    return table


def sections(observations: list[Observation], history: History) -> list[tuple[int, RenderableType]]:
    """The detail parts in reading order, each with the index of its section in SECTIONS; an empty
    section says so in a line. The services table, whose state the summary already shows, comes last."""
    made: list[tuple[int, RenderableType]] = [
        (0, throughput_table(history)), (1, errors_table(history)), (2, tracing_table(observations)),
        (3, limits_table(observations)), (3, shared_table(observations)), (4, caches_table(observations)),
        (4, pools_lines(observations)), (5, breakers_table(observations)), (2, services_table(observations)),
    ]

    def shows(part: RenderableType) -> bool:
        return bool(part.row_count if isinstance(part, Table) else part.plain if isinstance(part, Text) else True)

    shown = {section for section, part in made if shows(part)}
    parts: list[tuple[int, RenderableType]] = []
    for section, part in made:
        if shows(part):
            parts.append((section, part))
        elif section not in shown:  # in the place of its first part
            parts.append((section, Text(f"{EMPTY[section]}: none", style="dim")))
            shown.add(section)
    return parts


class FrameCache:
    """Reuses the rendering of a table whose cells did not change since the last frame.

    Rendering, not polling, is what a dashboard spends its CPU on; on a steady stack most
    tables read the same from one second to the next.
    """

    def __init__(self) -> None:
        self._rendered: dict[str, tuple[Hashable, list[Line]]] = {}

    def lines(self, part: RenderableType, console: Console, width: int) -> list[Line]:
        """`part` rendered `width` cells wide, each line padded to it."""
        if not isinstance(part, Table):
            return render(part, console, width)
        signature = (width, part.show_edge, tuple((str(column.header), *(str(cell) for cell in column.cells))
                                                  for column in part.columns))
        key = str(part.title)
        cached = self._rendered.get(key)
        if cached is None or cached[0] != signature:
            cached = (signature, render(part, console, width))
            self._rendered[key] = cached
        return cached[1]


@dataclass
class Page:
    """What one frame shows of the detail parts: columns of lines (each `width` cells), the parts'
    indexes, their sections."""

    columns: list[list[Line]]
    width: int
    shown: list[int]
    sections: set[int]


def lay_out(parts: list[tuple[int, RenderableType]], start: int, console: Console, frames: FrameCache,
            width: int, room: int | None) -> Page:
    """Parts from `start` on, in columns as many as `width` holds, as many whole parts as fit in `room`
    lines (all of them in one column when room is None); a part alone in its column is cut to fit."""
    count = 1 if room is None else max(1, (width + GAP) // (COLUMN_WIDTH + GAP))
    column_width = (width - GAP * (count - 1)) // count
    columns: list[list[Line]] = [[]]
    page = Page(columns, column_width, [], set())
    for index in range(start, len(parts)):
        section, part = parts[index]
        lines = frames.lines(compact(part, console, column_width), console, column_width)
        column = columns[-1]
        if room is not None:
            if column and len(column) + 1 + len(lines) > room:  # only whole parts join a column
                if len(columns) == count:
                    break
                columns.append([])
                column = columns[-1]
            lines = cut(lines, room - len(column) - (1 if column else 0), column_width)
        if column:
            column.append([Segment(" " * column_width)])  # a blank line between two parts
        column.extend(lines)
        page.shown.append(index)
        page.sections.add(section)
    return page


class Dashboard:
    """The Screen of terminal.run: polls, remembers, and lays the frame out for the console's size."""

    def __init__(self, poller: Callable[[], list[Observation]], interval: float) -> None:
        self.poller = poller
        self.interval = interval
        self.history = History()
        self.observations: list[Observation] = []
        self.frames = FrameCache()
        self.start = 0  # the index of the first detail part shown
        self._next = 0  # the first part the last frame did not show (0 when it showed the last)
        self._first_of: dict[int, int] = {}  # section -> the index of its first part

    def fetch(self) -> list[Observation]:
        return self.poller()

    def take(self, fetched: list[Observation]) -> None:
        self.observations = fetched
        self.history.add(fetched)

    def key(self, key: str) -> None:
        if key == "tab":
            self.start = self._next
        elif key in SECTION_KEYS:
            self.start = self._first_of.get(SECTION_KEYS[key], self.start)

    def frame(self, console: Console, keys: bool = True) -> RenderableType:
        width, height = console.size
        bounded = console.is_terminal  # off a terminal the frame is printed, not fitted to a screen
        up = sum(o.up for o in self.observations)
        observable = sum(o.observable for o in self.observations)
        polled = max((o.polled_at for o in self.observations), default=None)  # a key redraws: the poll's time
        header = Text.from_markup("[bold]tooloo observe[/]  polling…" if polled is None else
                                  f"[bold]tooloo observe[/]  updated "
                                  f"{datetime.fromtimestamp(polled).strftime('%H:%M:%S')}, every {self.interval:g} s  "
                                  f"[{'green' if up == observable else 'red'}]{up}/{observable} up[/]")
        header.no_wrap, header.overflow = True, "ellipsis"
        top = render(header, console, width)
        summary = self.frames.lines(compact(summary_table(self.observations, self.history), console, width),
                                    console, width)
        if bounded:
            summary = cut(summary, max(height - 2, 1), width)
        top += summary
        parts = sections(self.observations, self.history)
        self._first_of = {}
        for index, (section, _) in enumerate(parts):
            self._first_of.setdefault(section, index)
        self.start = min(self.start, len(parts) - 1)
        room = max(height - len(top) - 1, 0) if bounded else None
        page = lay_out(parts, self.start, console, self.frames, width, room) if room != 0 else \
            Page([[]], width, [], set())
        self._next = page.shown[-1] + 1 if page.shown and page.shown[-1] + 1 < len(parts) else 0
        rows = max((len(column) for column in page.columns), default=0) if room is None else room
        body: list[Line] = []
        for row in range(rows):
            line: Line = []
            for place, column in enumerate(page.columns):
                if place:
                    line.append(Segment(" " * GAP))
                line.extend(column[row] if row < len(column) else [Segment(" " * page.width)])
            body.append(Segment.adjust_line_length(line, width))
        return Lines(top + body + render(self.help(page, keys), console, width))

    def help(self, page: Page, keys: bool) -> Text:
        if not keys:
            return Text("Ctrl-C to quit", style="dim", no_wrap=True)
        line = Text("q quit  tab next ", no_wrap=True, overflow="crop")
        for index, name in enumerate(SECTIONS):
            line.append(" ")
            line.append(f"{index + 1} {name}", style="reverse" if index in page.sections else "dim")
        return line


def watch(targets: list[Target], interval: float, timeout: float, console: Console) -> int:
    """The dashboard until q (0), Ctrl-C (130) or SIGTERM (143)."""
    return run(Dashboard(lambda: poll(targets, timeout), interval), console, interval)
