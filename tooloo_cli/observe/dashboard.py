"""`tooloo observe --watch`: a live dashboard redrawn in place every interval.

    watch(targets, interval=1.0, timeout=0.5, console=Console())   # until Ctrl-C

Besides the tables of a one-shot poll it shows each service's throughput over the last
minute as a sparkline, and the most recent errors: polls that failed (once per change of
reason, not once a second) and sampled traces that ended in error.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Hashable
from datetime import datetime

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from tooloo_cli.observe.poll import Observation, Target, poll
from tooloo_cli.observe.render import new_table, tables

BLOCKS = "▁▂▃▄▅▆▇█"
WINDOW = 60.0
SEEN_TRACES = 500  # error trace ids remembered; a document shows only each service's last few traces


def sparkline(values: list[float]) -> str:
    """Block characters scaled to the largest value (a flat line when all are equal); NaN and infinity count as 0."""
    values = [value if math.isfinite(value) else 0.0 for value in values]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return BLOCKS[0] * len(values)
    return "".join(BLOCKS[min(int(value / top * (len(BLOCKS) - 1) + 0.5), len(BLOCKS) - 1)] for value in values)


class History:
    """What the dashboard remembers between polls: throughput over the last minute, recent errors."""

    def __init__(self, errors: int = 8) -> None:
        self.throughput: dict[str, deque[tuple[float, float]]] = {}
        self.errors: deque[tuple[float, str, str]] = deque(maxlen=errors)
        self._last_reason: dict[str, str | None] = {}
        self._seen_traces: dict[str, None] = {}  # an ordered set: the oldest id is evicted first

    def add(self, observations: list[Observation]) -> None:
        now = time.time()
        for o in observations:
            if not o.observable:
                continue
            series = self.throughput.setdefault(o.name, deque())
            tracer = o.module("tracer")
            series.append((now, float(tracer["throughput"]) if tracer else 0.0))
            while series and now - series[0][0] > WINDOW:
                series.popleft()
            if o.reason != self._last_reason.get(o.name) and o.reason is not None:
                self.errors.append((now, o.name, f"{o.state}: {o.reason}"))
            self._last_reason[o.name] = o.reason
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
                self.errors.append((now, o.name, f"{trace.get('name')} failed (trace {trace_id})"))


def throughput_table(history: History) -> Table:
    table = new_table("Throughput, last minute", "service", "req/s", "trend")
    for name, series in history.throughput.items():
        values = [value for _, value in series]
        table.add_row(name, f"{values[-1]:.1f}" if values else "-", Text(sparkline(values), style="cyan"))
    return table


def errors_table(history: History) -> RenderableType:
    if not history.errors:
        return Text("Recent errors: none", style="dim")
    table = new_table("Recent errors", "when", "service", "what")
    for moment, name, what in reversed(history.errors):
        table.add_row(datetime.fromtimestamp(moment).strftime("%H:%M:%S"), name, Text(what, style="red"))
    return table


def dashboard(observations: list[Observation], history: History, interval: float) -> Group:
    up = sum(o.up for o in observations)
    observable = sum(o.observable for o in observations)
    header = Text.from_markup(
        f"[bold]tooloo observe[/]  updated {datetime.now().strftime('%H:%M:%S')}, every {interval:g} s  "
        f"[{'green' if up == observable else 'red'}]{up}/{observable} up[/]  [dim]Ctrl-C to quit[/]")
    # A screen-mode Live crops what does not fit at the bottom: the watch-only tables go near the top,
    # right after the services (always the first of `tables`), so a normal terminal shows them.
    services, *modules = tables(observations)
    return Group(header, services, throughput_table(history), errors_table(history), *modules)


class _Lines:
    """Lines rendered earlier, yielded again as they are."""

    def __init__(self, lines: list[list[Segment]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines:
            yield from line
            yield Segment.line()


class FrameCache:
    """Reuses the rendering of a table whose cells did not change since the last frame.

    Rendering, not polling, is what a dashboard spends its CPU on; on a steady stack most
    tables read the same from one second to the next.
    """

    def __init__(self) -> None:
        self._rendered: dict[str, tuple[Hashable, _Lines]] = {}

    def __call__(self, frame: Group, console: Console) -> Group:
        parts: list[RenderableType] = []
        for part in frame.renderables:
            if not isinstance(part, Table) or not part.title:
                parts.append(part)
                continue
            signature = (console.width, tuple(tuple(str(cell) for cell in column.cells) for column in part.columns))
            cached = self._rendered.get(str(part.title))
            if cached is None or cached[0] != signature:
                cached = (signature, _Lines(console.render_lines(part, console.options, pad=False)))
                self._rendered[str(part.title)] = cached
            parts.append(cached[1])
        return Group(*parts)


def watch(targets: list[Target], interval: float, timeout: float, console: Console) -> None:
    history = History()
    frames = FrameCache()
    # The alternate screen on a terminal: redrawn in place, no scrolling, no flicker.
    with Live(console=console, screen=console.is_terminal, auto_refresh=False,
              redirect_stdout=False, redirect_stderr=False) as live:
        while True:
            started = time.monotonic()
            observations = poll(targets, timeout)
            history.add(observations)
            live.update(frames(dashboard(observations, history, interval), console), refresh=True)
            time.sleep(max(interval - (time.monotonic() - started), 0.05))
