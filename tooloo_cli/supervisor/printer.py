"""What the supervisor's commands show: prefixed log lines, the status table, start-up progress.

    printer = Printer(console_for(sys.stdout), names)
    printer.write("budget", b"POST /api/v1/providers/burst 200 52.1ms 4bf9...\\n")
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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from tooloo_cli.units import duration, mebibytes

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
STATE_STYLES = {"running": "green", "waiting": "yellow", "starting": "yellow", "backoff": "yellow",
                "stopping": "yellow", "stopped": "dim", "exited": "dim", "failed": "bold red"}
STATUS_COLUMNS = (("service", "left"), ("state", "left"), ("pid", "right"), ("port", "right"), ("uptime", "right"),
                  ("restarts", "right"), ("exit", "right"), ("cpu", "right"), ("memory", "right"))

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


class Printer:
    def __init__(self, console: Console | PlainConsole, names: list[str]) -> None:
        self.console = console
        self.width = max(len(name) for name in names)
        self.colours = {name: COLOURS[index % len(COLOURS)] for index, name in enumerate(names)}
        self._partial: dict[str, bytes] = {}

    def line(self, name: str, text: str) -> None:
        if isinstance(self.console, PlainConsole):
            self.console.write(f"{name:<{self.width}} | {text}")
            return
        from rich.text import Text

        prefix = Text(f"{name:<{self.width}} | ", style=self.colours.get(name, "white"))
        self.console.print(prefix + Text(text), highlight=False, soft_wrap=True)

    def write(self, name: str, chunk: bytes) -> None:
        """Prints whole lines from a service's output, keeping a partial line for the next chunk."""
        data = self._partial.pop(name, b"") + chunk
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[name] = rest
        for raw in lines:
            self.line(name, raw.decode("utf-8", errors="replace"))

    def status_table(self, document: dict[str, Any], names: list[str] | None = None) -> None:
        shown = {name: service for name, service in document["services"].items() if not names or name in names}
        rows = []  # each cell as markup: rich styles it, a PlainConsole writes its text
        for name, service in shown.items():
            state = service["state"]
            health = {"healthy": " [green]✓[/]", "unhealthy": " [red]✗ unhealthy[/]"}.get(service.get("health"), "")
            if service.get("health") == "healthy" and not service.get("ready", True):
                health = " [yellow]✓ not ready[/]"
            rows.append([
                escape(name),
                f"[{STATE_STYLES.get(state, 'white')}]{escape(state)}[/]{health}",
                str(service["pid"] or "-"),
                str(service["port"] or "-"),
                duration(service.get("uptime")),
                str(service.get("restarts", 0)),
                "-" if service.get("lastExitCode") is None else str(service["lastExitCode"]),
                "-" if service.get("cpuPercent") is None else f"{service['cpuPercent']:.1f}%",
                mebibytes(service.get("rssBytes")),
            ])
        self._table(rows)
        for name, service in shown.items():
            if service.get("error"):
                self.console.print(f"[red]{escape(name)}: {escape(service['error'])}[/]")
            if service.get("lastWarning"):
                self.console.print(f"[yellow]{escape(name)}: {escape(service['lastWarning'])}[/]")
            degraded = ((service.get("probes") or {}).get("readiness") or {}).get("degraded")
            if degraded and service.get("state") == "running":
                self.console.print(f"[yellow]{escape(name)}: degraded: {escape(degraded)}[/]")
        supervisor = document.get("supervisor")
        if supervisor:
            self.console.print(f"[dim]supervisor pid {supervisor['pid']}, up {duration(supervisor['uptime'])}, "
                               f"{mebibytes(supervisor['rssBytes'])}[/]")

    def _table(self, rows: list[list[str]]) -> None:
        if isinstance(self.console, PlainConsole):
            lines = _plain_table(STATUS_COLUMNS, [[plain(cell) for cell in row] for row in rows])
            if _cell_width(lines[1]) <= self.console.width:
                self.console.write("\n".join(lines))
                return
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False, collapse_padding=True)
        for column, justify in STATUS_COLUMNS:
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(*row)
        # Too wide for a PlainConsole: rich shrinks the columns that can give, as it would have.
        console = self.console
        if isinstance(console, PlainConsole):
            console = Console(file=console.file, width=console.width)
        console.print(table)

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
