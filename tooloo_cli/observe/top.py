"""`tooloo top`: CPU, memory, restarts and req/s of every service, sorted, redrawn in place.

    code = top(load_config(), [], Console(), interval=1.0)     # until q, Ctrl-C or SIGTERM

As `pm2 monit` shows a process manager's processes: one row per replica, busiest first.
The processes' figures are the supervisor's status document, read as `tooloo status`
reads it (`status_document`: the supervisor samples each process tree's CPU every
second, so a figure is the CPU a service really uses, not the instant of a request); req/s
is each service's request counter over the last few seconds (rates.py), as the
dashboard shows it. Without a supervisor every service reads stopped, and top says so.

The status is asked in a thread of its own, beside the services' poll, and waited for at
most the poll's timeout: a supervisor that is busy, starting (its lock held, its socket not
answering yet), gone between two polls or its files removed under it (a `down` meanwhile)
must not freeze the keys or end top. Until it answers again, top shows the last figures
it had, their time in the header, with why beneath ("polling…" before the first answer);
the CPU trend has a gap meanwhile, as for a stopped service.

Keys: c CPU, m memory, r restarts, t req/s, n name choose the order; q quits. Exit codes
and the terminal's restoration are terminal.py's: 0 on q, 130 on Ctrl-C, 143 on SIGTERM.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.text import Text

from tooloo_cli.errors import ToolooError
from tooloo_cli.loopback import LoopbackError
from tooloo_cli.observe.dashboard import per_second, sample, sparkline, trend
from tooloo_cli.observe.poll import Observation, number, poll, targets_of
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


def top_table(shown: list[dict[str, Any]], cpu: dict[str, deque[tuple[float, float | None]]],
              now: float) -> RenderableType:
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
            per_second(row["rate"]), str(row["pid"] or "-"), duration(row.get("uptime")))
    return table


class Top:
    """The Screen of terminal.run: the supervisor's status and the services' counters, sorted."""

    def __init__(self, status: Callable[[], dict[str, Any]], poller: Callable[[], list[Observation]],
                 interval: float, order: str = "c", timeout: float = 0.5) -> None:
        self.status, self.poller, self.interval, self.order, self.timeout = status, poller, interval, order, timeout
        self.counters = Counters()
        self.document: dict[str, Any] = {"supervisor": None, "services": {}}
        self.updated: float | None = None  # the wall time the document came
        self.problem: str | None = None  # why the document is not the supervisor's latest
        # replica -> (moment, CPU %) over the last minute; None: not known (stopped, no answer)
        self.cpu: dict[str, deque[tuple[float, float | None]]] = {}
        self.now = 0.0
        self._asking: threading.Thread | None = None  # the status asked for and not taken yet
        self._answer: dict[str, Any] | BaseException | None = None

    def _ask(self) -> None:
        try:
            self._answer = self.status()
        except BaseException as exc:  # taken up by take(), in the loop's thread
            self._answer = exc

    def fetch(self) -> list[Observation]:
        """The services' observations, the status asked for meanwhile and waited for at most `timeout` s; in
        the poll's thread: it touches nothing frame() reads."""
        started = time.monotonic()
        if self._asking is None:  # else the last question is still out: waited for again, not asked twice
            self._asking = threading.Thread(target=self._ask, daemon=True)
            self._asking.start()
        observations = self.poller()
        self._asking.join(max(started + self.timeout - time.monotonic(), 0.0))
        return observations

    def take(self, fetched: list[Observation], now: float | None = None) -> None:
        """The status, if it came, and the counters of `fetched`; `now`: a monotonic time."""
        assert self._asking is not None, "take() comes after fetch()"
        fresh = not self._asking.is_alive()
        if not fresh:
            self.problem = f"the supervisor did not answer within {self.timeout:g} s"
        else:
            answer, self._asking, self._answer = self._answer, None, None
            # It does not answer, went away between two calls, or its files did (a concurrent `down`).
            if isinstance(answer, (ToolooError, LoopbackError, OSError)):
                fresh, self.problem = False, str(answer) or type(answer).__name__
            elif isinstance(answer, BaseException):
                raise answer
            else:
                assert answer is not None
                self.document, self.updated, self.problem = answer, time.time(), None
        self.now = time.monotonic() if now is None else now
        self.counters.add(fetched, self.now)
        for name, service in self.document["services"].items():
            sample(self.cpu.setdefault(name, deque()), self.now, number(service.get("cpuPercent")) if fresh else None)

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
        updated = "-" if self.updated is None else datetime.fromtimestamp(self.updated).strftime("%H:%M:%S")
        header = Text.from_markup(
            f"[bold]tooloo top[/]  updated {updated}  "
            f"[{'green' if running == len(shown) else 'yellow'}]{running}/{len(shown)} running[/]  "
            f"cpu {cpu:.1f}%  memory {mebibytes(memory)}")
        if self.problem is not None:
            header.append(f"\n{self.problem}", style="bold red")
        elif self.updated is None:  # the first answer is not in yet
            header.append("\npolling…", style="dim")
        elif supervisor is None:
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
    view = Top(lambda: status_document(loaded, names), lambda: poll(targets, timeout), interval, timeout=timeout)
    return run(view, console, interval)
