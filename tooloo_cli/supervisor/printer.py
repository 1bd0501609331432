"""What the supervisor's commands show: prefixed log lines, the status table, start-up progress.

    printer = Printer(Console(), names)
    printer.write("budget", b"POST /api/v1/providers/burst 200 52.1ms 4bf9...\\n")
    printer.status_table(document)
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tooloo_cli.units import duration, megabytes

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta")
STATE_STYLES = {"running": "green", "waiting": "yellow", "starting": "yellow", "backoff": "yellow",
                "stopping": "yellow", "stopped": "dim", "exited": "dim", "failed": "bold red"}


class Printer:
    def __init__(self, console: Console, names: list[str]) -> None:
        self.console = console
        self.width = max(len(name) for name in names)
        self.colours = {name: COLOURS[index % len(COLOURS)] for index, name in enumerate(names)}
        self._partial: dict[str, bytes] = {}

    def line(self, name: str, text: str) -> None:
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
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), show_edge=False, collapse_padding=True)
        for column, justify in (("service", "left"), ("state", "left"), ("pid", "right"), ("port", "right"),
                                ("uptime", "right"), ("restarts", "right"), ("exit", "right"), ("cpu", "right"),
                                ("memory", "right")):
            table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for name, service in document["services"].items():
            if names and name not in names:
                continue
            state = service["state"]
            health = {"healthy": " [green]✓[/]", "unhealthy": " [red]✗ unhealthy[/]"}.get(service.get("health"), "")
            if service.get("health") == "healthy" and not service.get("ready", True):
                health = " [yellow]✓ not ready[/]"
            table.add_row(
                name,
                f"[{STATE_STYLES.get(state, 'white')}]{state}[/]{health}",
                str(service["pid"] or "-"),
                str(service["port"] or "-"),
                duration(service.get("uptime")),
                str(service.get("restarts", 0)),
                "-" if service.get("lastExitCode") is None else str(service["lastExitCode"]),
                "-" if service.get("cpuPercent") is None else f"{service['cpuPercent']:.1f}%",
                megabytes(service.get("rssBytes")),
            )
        self.console.print(table)
        for name, service in document["services"].items():
            if names and name not in names:
                continue
            if service.get("error"):
                self.console.print(f"[red]{escape(name)}: {escape(service['error'])}[/]")
            if service.get("lastWarning"):
                self.console.print(f"[yellow]{escape(name)}: {escape(service['lastWarning'])}[/]")
        supervisor = document.get("supervisor")
        if supervisor:
            self.console.print(f"[dim]supervisor pid {supervisor['pid']}, up {duration(supervisor['uptime'])}, "
                               f"{megabytes(supervisor['rssBytes'])}[/]")

    def progress_table(self, document: dict[str, Any], names: list[str]) -> Table:
        """One row per service being started, for a Live display."""
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
