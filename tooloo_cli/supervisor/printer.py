"""What the supervisor's commands show: prefixed log lines, the status table, start-up progress.

    printer = Printer(console_for(sys.stdout), names)
    printer.entries("budget", [Entry(time.time(), "stdout", "POST /api/v1/providers/burst 200 52.1ms 4bf9...")])
    printer.status_table(document)

`console_for` gives rich's Console where rich adds something: a terminal (colour, the
width of the window, the progress redrawn in place) or colour asked for (FORCE_COLOR,
TTY_COMPATIBLE=1). Everywhere else (a pipe, a file, a script, CI) rich would write plain
text, and a `PlainConsole` writes that same text without importing rich, ~45 ms of a
command that takes a tenth of a second: markup removed as rich removes it, the status
table laid out as rich lays it out (SIMPLE_HEAD, two spaces between columns). Two things
rich would add are left out on purpose: long lines are not wrapped at 80 columns (a
script reads one line as one line) and `:name:` emoji codes stay as written. A table
wider than the console goes to rich, which shrinks it.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from tooloo_cli.supervisor.logs import Entry, day_and_time
from tooloo_cli.units import duration, mebibytes, visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
STATE_STYLES = {"running": "green", "waiting": "yellow", "starting": "yellow", "backoff": "yellow",
                "stopping": "yellow", "stopped": "dim", "exited": "dim", "failed": "bold red"}
STATUS_COLUMNS = (("service", "left"), ("state", "left"), ("pid", "right"), ("port", "right"), ("uptime", "right"),
                  ("restarts", "right"), ("exit", "right"), ("cpu", "right"), ("memory", "right"))
# Left out in this order when the table is wider than the terminal, so that no cell is cut: a pid
# shown as "188…" or a name as "segmentati…" is worse than no uptime (`status NAME` has them all).
DROPPED_FIRST = ("exit", "uptime", "port", "cpu", "restarts", "memory")

# rich.markup's own patterns: a tag is `[` then a-z, #, / or @, up to `]`; backslashes escape it.
_TAGS = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_ESCAPABLE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """`text` safe inside markup: rich.markup.escape, without importing rich."""
    text = _ESCAPABLE.sub(lambda match: f"{match.group(1)}{match.group(1)}\\{match.group(2)}", text)
    return text + "\\" if text.endswith("\\") and not text.endswith("\\\\") else text


def plain(markup: str) -> str:
    """The text rich shows for `markup`, without its styles (rich.markup.render's reading of it)."""
    out, position = [], 0
    for match in _TAGS.finditer(markup):
        full, escapes, _ = match.groups()
        start, end = match.span()
        if start > position:
            out.append(markup[position:start].replace("\\[", "["))
        backslashes, escaped = divmod(len(escapes), 2)
        out.append("\\" * backslashes)
        if escaped:
            out.append(full[len(escapes):])
        position = end
    out.append(markup[position:].replace("\\[", "["))
    return "".join(out)


def writes_plain_text(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether rich's Console would write `stream` as plain text: rich's own test (Console.is_terminal)."""
    compatible = environ.get("TTY_COMPATIBLE", "")
    if compatible in ("0", "1"):
        return compatible == "0"
    forced = environ.get("FORCE_COLOR")
    if forced is not None:
        return forced == ""
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


class PlainConsole:
    """The part of rich's Console the stack commands use, for output rich would write as plain text."""

    is_terminal = False

    def __init__(self, file: TextIO | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self._file = file
        self.environ = environ

    @property
    def file(self) -> TextIO:
        return self._file or sys.stdout  # looked up when written: the CLI may point stdout elsewhere

    @property
    def width(self) -> int:
        """rich's width for a console that is not a terminal: $COLUMNS, else a terminal on a standard
        stream, else 80."""
        columns = self.environ.get("COLUMNS", "")
        if columns.isdigit():
            return int(columns)
        for descriptor in (0, 1, 2):
            try:
                return os.get_terminal_size(descriptor).columns or 80
            except OSError:
                continue
        return 80

    def print(self, *objects: str, **_options: Any) -> None:
        """Markup strings, as rich would print them to a file (highlighting and wrapping do not apply)."""
        self.write(" ".join(plain(str(text)) for text in objects))

    def write(self, text: str) -> None:
        file = self.file
        file.write(text + "\n")
        file.flush()  # as rich does after each print: a line of a foreground service shows when it comes


def console_for(stream: TextIO | None = None) -> Console | PlainConsole:
    """rich's Console where it adds colour or fitting; a PlainConsole where it would write plain text."""
    if writes_plain_text(stream or sys.stdout):
        return PlainConsole(stream)
    from rich.console import Console

    return Console(file=stream)


def _cell_width(text: str) -> int:
    """Columns `text` takes on a terminal (wide East Asian characters take two, as rich counts them)."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)


def _plain_table(columns: tuple[tuple[str, str], ...], rows: list[list[str]]) -> list[str]:
    """rich's SIMPLE_HEAD table (no edge, padding collapsed to two spaces, a rule under the header) as lines."""
    widths = [max(_cell_width(cell) for cell in column) for column in
              zip([name for name, _ in columns], *rows)]

    def line(cells: list[str]) -> str:
        parts = []
        for cell, width, (_, justify) in zip(cells, widths, columns):
            pad = " " * (width - _cell_width(cell))
            parts.append(cell + pad if justify == "left" else pad + cell)
        return "  ".join(parts)

    return [line([name for name, _ in columns]), "─" * (sum(widths) + 2 * (len(widths) - 1)),
            *(line(row) for row in rows)]


def _state(service: dict[str, Any]) -> str:
    """A replica's state and health as markup: `running ✓`, `running ✗ unhealthy`, `failed`…"""
    state = service["state"]
    health = {"healthy": " [green]✓[/]", "unhealthy": " [red]✗ unhealthy[/]"}.get(service.get("health"), "")
    if service.get("health") == "healthy" and not service.get("ready", True):
        health = " [yellow]✓ not ready[/]"
    return f"[{STATE_STYLES.get(state, 'white')}]{escape(state)}[/]{health}"


def _when_and_what(entry: Entry) -> tuple[str, str]:
    """A log entry's time as shown (with a space after it; nothing for an unstamped line) and its text,
    `tooloo: …` for the supervisor's events, its control characters made visible."""
    when = "" if entry.at is None else f"{day_and_time(entry.at)} "
    text = visible(entry.text)  # a service's line cannot paint another one's prefix over its own
    return when, f"tooloo: {text}" if entry.stream == "supervisor" else text


def _exit(one: dict[str, Any]) -> str:
    """One past exit: when, how (its code or signal) and whether the supervisor had asked for it."""
    how = f"killed by {one['signal']}" if one.get("signal") else f"exit code {one.get('exitCode')}"
    why = f", ended: {one['endedFor']}" if one.get("endedFor") else ", stopped" if one.get("expected") else ""
    return f"{day_and_time(one['at'])} {how}{why}"


def _fitted(columns: tuple[tuple[str, str], ...], rows: list[list[str]], width: int,
            dropped: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], list[list[str]]]:
    """The columns (and rows' cells) that fit in `width`, leaving out `dropped`'s in their order."""
    kept = list(range(len(columns)))
    plain_rows = [[plain(cell) for cell in row] for row in rows]
    for name in dropped:
        natural = _plain_table(tuple(columns[i] for i in kept), [[row[i] for i in kept] for row in plain_rows])[1]
        if _cell_width(natural) <= width:
            break
        kept.remove(next(i for i in kept if columns[i][0] == name))
    return tuple(columns[i] for i in kept), [[row[i] for i in kept] for row in rows]


class Printer:
    def __init__(self, console: Console | PlainConsole, names: list[str]) -> None:
        self.console = console
        self.width = max(len(name) for name in names)
        self.colours = {name: COLOURS[index % len(COLOURS)] for index, name in enumerate(names)}

    def entry(self, name: str, entry: Entry) -> None:
        """`13:11:40.123 budget | the line`: its time (with its date when not today), whose it is, the
        line; the supervisor's events for the replica read `tooloo: …`."""
        when, text = _when_and_what(entry)
        if isinstance(self.console, PlainConsole):
            self.console.write(f"{when}{name:<{self.width}} | {text}")
            return
        from rich.text import Text

        prefix = Text(when, style="dim") + Text(f"{name:<{self.width}} | ", style=self.colours.get(name, "white"))
        self.console.print(prefix + Text(text, style="yellow" if entry.stream == "supervisor" else ""),
                           highlight=False, soft_wrap=True)

    def entries(self, name: str, entries: list[Entry]) -> None:
        for entry in entries:
            self.entry(name, entry)

    def status_table(self, document: dict[str, Any], names: list[str] | None = None) -> None:
        shown = {name: service for name, service in document["services"].items() if not names or name in names}
        rows = []  # each cell as markup: rich styles it, a PlainConsole writes its text
        for name, service in shown.items():
            rows.append([
                escape(name),
                _state(service),
                str(service["pid"] or "-"),
                str(service["port"] or "-"),
                duration(service.get("uptime")),
                str(service.get("restarts", 0)),
                _last_exit(service.get("lastExitCode")),
                "-" if service.get("cpuPercent") is None else f"{service['cpuPercent']:.1f}%",
                mebibytes(service.get("rssBytes")),
            ])
        self.table(STATUS_COLUMNS, rows, DROPPED_FIRST, "`tooloo status NAME` shows them")
        for name, service in shown.items():
            if service.get("error"):
                self.console.print(f"[red]{escape(name)}: {escape(visible(service['error']))}[/]")
            if service.get("lastWarning"):
                self.console.print(f"[yellow]{escape(name)}: {escape(visible(service['lastWarning']))}[/]")
            degraded = ((service.get("probes") or {}).get("readiness") or {}).get("degraded")
            if degraded and service.get("state") == "running":
                self.console.print(f"[yellow]{escape(name)}: degraded: {escape(degraded)}[/]")
        supervisor = document.get("supervisor")
        if supervisor:
            self.console.print(f"[dim]supervisor pid {supervisor['pid']}, up {duration(supervisor['uptime'])}, "
                               f"{mebibytes(supervisor['rssBytes'])}[/]")

    def table(self, all_columns: tuple[tuple[str, str], ...], rows: list[list[str]],
              dropped: tuple[str, ...] = (), where_the_rest_is: str = "") -> None:
        """Rows of markup cells under `all_columns` ((name, justify) pairs), as rich's SIMPLE_HEAD
        table; the `dropped` columns left out in their order while it is too wide (and said so)."""
        columns, rows = _fitted(all_columns, rows, self.console.width, dropped)
        if isinstance(self.console, PlainConsole):
            lines = _plain_table(columns, [[plain(cell) for cell in row] for row in rows])
            if _cell_width(lines[1]) <= self.console.width:
                self.console.write("\n".join(lines))
                self._left_out(all_columns, columns, where_the_rest_is)
                return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False, collapse_padding=True)
        for column, justify in columns:
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(*row)
        # Too wide even so (a terminal narrower than the names): rich shrinks the columns that can give.
        console = self.console
        if isinstance(console, PlainConsole):
            console = Console(file=console.file, width=console.width)
        console.print(table)
        self._left_out(all_columns, columns, where_the_rest_is)

    def _left_out(self, all_columns: tuple[tuple[str, str], ...], columns: tuple[tuple[str, str], ...],
                  where_the_rest_is: str) -> None:
        kept = {name for name, _ in columns}
        if missing := [name for name, _ in all_columns if name not in kept]:
            self.console.print(f"[dim]left out at {self.console.width} columns: {', '.join(missing)}"
                               + (f" ({where_the_rest_is})" if where_the_rest_is else "") + "[/]")

    def detail(self, name: str, service: dict[str, Any], log: str, last: list[Entry]) -> None:
        """One replica for troubleshooting: command, pid, port, probes, exits, usage, its log's last lines."""
        rows = [("command", " ".join(service.get("command") or []) or "-")]
        pid = str(service["pid"] or "-")
        rows.append(("pid", pid if service.get("uptime") is None else f"{pid}, up {duration(service['uptime'])}"))
        rows.append(("port", str(service["port"] or "-")))
        restarts = str(service.get("restarts", 0))
        if service.get("state") == "backoff" and isinstance(service.get("restartAt"), (int, float)):
            restarts += f", the next in {max(service['restartAt'] - time.time(), 0):.1f} s"
        rows.append(("restarts", restarts))
        rows.append(("cpu, memory", "-" if service.get("cpuPercent") is None else
                     f"{service['cpuPercent']:.1f}%, {mebibytes(service.get('rssBytes'))} (its process tree)"))
        for which in ("liveness", "readiness"):
            probe = (service.get("probes") or {}).get(which)
            rows.append((which, "not asked yet" if not probe else
                         f"{probe.get('probe')}: {'ok' if probe.get('ok') else 'failing: ' + str(probe.get('reason'))}"
                         f" in {probe.get('latencyMs')} ms, {duration(time.time() - probe.get('at', time.time()))} ago"
                         + (f"; degraded: {probe['degraded']}" if probe.get("degraded") else "")))
        exits = service.get("exits") or []
        rows.append(("exits", "none" if not exits else "; ".join(_exit(one) for one in reversed(exits))))
        for key, label in (("error", "error"), ("lastWarning", "warning")):
            if service.get(key):
                rows.append((label, visible(str(service[key]))))  # the service's own words
        rows.append(("log", log))
        self.console.print(f"[bold]{escape(name)}[/]  {_state(service)}")
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.console.print(f"  [dim]{label:<{width}}[/]  {escape(value)}", emoji=False)
        if last:
            self.console.print(f"  [dim]its last {len(last)} log lines:[/]")
            for entry in last:
                when, said = _when_and_what(entry)
                self.console.print(f"    [dim]{when}[/]{escape(said)}", emoji=False)

    def progress_table(self, document: dict[str, Any], names: list[str]) -> Table:
        """One row per service being started, for a Live display (on a terminal: rich's)."""
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        for name in names:
            service = document["services"][name]
            state, health = service["state"], service.get("health")
            if state == "running" and health == "healthy" and service.get("ready", True):
                mark = f"[green]✓ healthy[/] [dim]in {service.get('startupSeconds') or 0:.2f}s[/]"
            elif state == "failed":
                mark = "[red]✗ failed[/]"
            elif state == "running":
                mark = "[yellow]… not ready yet[/]"
            else:
                mark = f"[yellow]… {state}[/]"
            table.add_row(Text(name, style=self.colours.get(name, "white")), mark)
        return table


def _last_exit(code: int | None) -> str:
    """The last exit as the status table shows it: its code, or the signal that ended it (`SIGKILL`,
    where asyncio's returncode reads -9), as `tooloo status NAME` names it."""
    if code is None:
        return "-"
    if code < 0:
        from tooloo_cli.supervisor.restart import signal_name  # only then: status need not import it

        return signal_name(-code)
    return str(code)
