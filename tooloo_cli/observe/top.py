"""`tooloo top`: CPU, memory, restarts and req/s of every service, sorted, redrawn in place.

    code = top(load_config(), [], Console(), interval=1.0)     # until q, Ctrl-C or SIGTERM

As `pm2 monit` shows a process manager's processes: one row per replica, busiest first.
The processes' figures are the supervisor's status document, read as `tooloo status`
reads it (`status_document`: the supervisor samples each process tree's CPU every
second, so a figure is the CPU a service really uses, not the instant of a request); req/s
is each service's request counter over the last few seconds (rates.py), as the
dashboard shows it. Without a supervisor every service reads stopped, and top says so.

Keys: c CPU, m memory, r restarts, t req/s, n name choose the order; q quits. Exit codes
and the terminal's restoration are terminal.py's: 0 on q, 130 on Ctrl-C, 143 on SIGTERM.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.text import Text

from tooloo_cli.observe.dashboard import WINDOW, sparkline, trend
from tooloo_cli.observe.poll import Observation, poll, targets_of
from tooloo_cli.observe.rates import Counters
from tooloo_cli.observe.render import compact, new_table
from tooloo_cli.observe.terminal import Lines, cut, render, run
from tooloo_cli.units import duration, mebibytes

if TYPE_CHECKING:
    from tooloo_cli.config import LoadedConfig

CPU_CELLS = 10  # the CPU sparkline: one cell per 6 s of the last minute

# key -> (what the help line calls it, the sort key of a row: larger first, then by name)
ORDERS: dict[str, tuple[str, Callable[[dict[str, Any]], float]]] = {
    "c": ("cpu", lambda row: row["cpuPercent"] if row["cpuPercent"] is not None else -1.0),
    "m": ("memory", lambda row: row["rssBytes"] if row["rssBytes"] is not None else -1.0),
    "r": ("restarts", lambda row: float(row.get("restarts") or 0)),
    "t": ("req/s", lambda row: row["rate"] if row["rate"] is not None else -1.0),
    "n": ("name", lambda row: 0.0),
}


def rows(document: dict[str, Any], counters: Counters, order: str) -> list[dict[str, Any]]:
    """The replicas of a status document with their req/s, sorted by `order` (a key of ORDERS)."""
    found = [service | {"name": name, "rate": counters.rate(name)} for name, service in document["services"].items()]
    by = ORDERS[order][1]
    return sorted(found, key=lambda row: (-by(row), row["name"]))


def top_table(shown: list[dict[str, Any]], cpu: dict[str, deque[tuple[float, float]]], now: float) -> RenderableType:
    """The rows, with each one's CPU over the last minute on one scale for the whole table."""
    from tooloo_cli.supervisor.printer import STATE_STYLES

    table = new_table("", "service", "state", "cpu", "cpu trend", "memory", "restarts", "req/s", "pid",
                      "uptime", optional=("pid", "uptime", "cpu trend"))
    table.columns[3].justify = "left"
    trends = {row["name"]: trend(cpu.get(row["name"], ()), now, CPU_CELLS) for row in shown}
    scale = max((value for cells in trends.values() for value in cells if value is not None), default=0.0)
    for row in shown:
        state = Text(row["state"], style=STATE_STYLES.get(row["state"], "white"))
        if row.get("health") == "unhealthy":
            state.append(" ✗", style="red")
        restarts = int(row.get("restarts") or 0)
        table.add_row(
            row["name"], state, "-" if row["cpuPercent"] is None else f"{row['cpuPercent']:.1f}%",
            Text(sparkline(trends[row["name"]], scale), style="cyan"), mebibytes(row["rssBytes"]),
            Text(str(restarts), style="yellow" if restarts else ""),
            "-" if row["rate"] is None else f"{row['rate']:.1f}", str(row["pid"] or "-"), duration(row.get("uptime")))
    return table


class Top:
    """The Screen of terminal.run: the supervisor's status and the services' counters, sorted."""

    def __init__(self, status: Callable[[], dict[str, Any]], poller: Callable[[], list[Observation]],
                 interval: float, order: str = "c") -> None:
        self.status, self.poller, self.interval, self.order = status, poller, interval, order
        self.counters = Counters()
        self.document: dict[str, Any] = {"supervisor": None, "services": {}}
        self.cpu: dict[str, deque[tuple[float, float]]] = {}  # replica -> (moment, CPU %) over the last minute
        self.now = 0.0

    def poll(self) -> None:
        self.document = self.status()
        self.now = time.monotonic()
        self.counters.add(self.poller(), self.now)
        for name, service in self.document["services"].items():
            series = self.cpu.setdefault(name, deque())
            if service.get("cpuPercent") is not None:
                series.append((self.now, float(service["cpuPercent"])))
            while series and self.now - series[0][0] > WINDOW:
                series.popleft()

    def key(self, key: str) -> None:
        if key in ORDERS:
            self.order = key

    def frame(self, console: Console, keys: bool = True) -> RenderableType:
        width, height = console.size
        shown = rows(self.document, self.counters, self.order)
        running = sum(row["state"] == "running" for row in shown)
        cpu = sum(row["cpuPercent"] or 0.0 for row in shown)
        memory = sum(row["rssBytes"] or 0 for row in shown)
        supervisor = self.document.get("supervisor")
        # Short enough for 80 columns with four-digit figures (the interval is on the help line).
        header = Text.from_markup(
            f"[bold]tooloo top[/]  updated {datetime.now().strftime('%H:%M:%S')}  "
            f"[{'green' if running == len(shown) else 'yellow'}]{running}/{len(shown)} running[/]  "
            f"cpu {cpu:.1f}%  memory {mebibytes(memory)}")
        if supervisor is None:
            header.append("\nno supervisor runs: `tooloo up` starts the stack", style="bold red")
        table = compact(top_table(shown, self.cpu, self.now), console, width)
        lines = render(header, console, width) + render(table, console, width)
        if console.is_terminal:
            lines = cut(lines, height - 1, width)
            lines += [render(Text(""), console, width)[0]] * (height - 1 - len(lines))
        return Lines(lines + render(self.help(keys), console, width))

    def help(self, keys: bool) -> Text:
        if not keys:
            return Text(f"sorted by {ORDERS[self.order][0]}, every {self.interval:g} s  Ctrl-C to quit", style="dim",
                        no_wrap=True)
        line = Text("q quit  sort:", no_wrap=True, overflow="crop")
        for key, (name, _) in ORDERS.items():
            line.append(" ")
            line.append(f"{key} {name}", style="reverse" if key == self.order else "dim")
        line.append(f"  every {self.interval:g} s", style="dim")
        return line


def top(loaded: LoadedConfig, names: list[str], console: Console, interval: float | None = None,
        timeout: float | None = None) -> int:
    """`tooloo top` on the stack of `loaded` (the replicas of `names`, every one when empty)."""
    from tooloo_cli.supervisor.daemon import status_document

    settings = loaded.config.observe
    interval = settings.interval if interval is None else interval
    timeout = settings.timeout if timeout is None else timeout
    targets = targets_of(loaded, names)
    view = Top(lambda: status_document(loaded, names), lambda: poll(targets, timeout), interval)
    return run(view, console, interval)
