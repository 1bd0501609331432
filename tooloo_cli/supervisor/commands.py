"""The supervisor's commands as the CLI runs them: up, down, status, restart, logs.

    exit_code = up(load_config(), ["web", "budget"], console)

Each is a thin client of the supervisor's control API, except `up --foreground` (the
supervisor in this process) and `logs` (which reads the log files, so that it works
whether or not a supervisor runs). The detached supervisor itself starts from
`tooloo_cli/supervisor/__main__.py`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.supervisor.control import ControlClient
from tooloo_cli.supervisor.daemon import connect, launch, status_document
from tooloo_cli.supervisor.logs import tail
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.ports import port_holder
from tooloo_cli.supervisor.printer import Printer

if TYPE_CHECKING:
    from rich.console import Console

ACTIVE = ("starting", "running", "backoff")
POLL = 0.05


def _status(client: ControlClient) -> dict[str, Any]:
    _, document = client.request("GET", "/status")
    return document


def _taken_ports(loaded: LoadedConfig, names: list[str]) -> list[str]:
    problems = []
    host = loaded.config.stack.host
    for name in names:
        port = loaded.services[name].port
        holder = port_holder(host, port)
        if holder is not None:
            pid, program = holder
            owner = f"pid {pid} ({program})" if pid else program
            problems.append(f"{name}: port {port} is taken by {owner}")
    return problems


def up(loaded: LoadedConfig, names: list[str], console: Console, foreground: bool = False) -> int:
    paths = StatePaths.of(loaded)
    names = names or list(loaded.services)
    client = connect(paths)
    if foreground and client is not None:
        raise ToolooError("a supervisor already runs in the background; `tooloo down` first to run in the foreground")
    current = _status(client)["services"] if client else {}
    missing = [name for name in names if current.get(name, {}).get("state") not in ACTIVE]
    printer = Printer(console, names)
    if not missing:
        console.print("everything asked for is already running")
        printer.status_table(_status(client) if client else status_document(loaded), names)
        return 0
    problems = _taken_ports(loaded, missing)
    if problems:
        for problem in problems:
            console.print(f"[red]tooloo up: {escape(problem)}[/]")
        console.print("nothing was started; stop that process or change the port in tooloo.toml")
        return 1
    if foreground:
        return _run_foreground(loaded, missing, console)
    if client is None:
        client = launch(loaded, missing)
    else:
        client.request("POST", "/start", {"services": missing})
    return _wait_healthy(client, loaded, missing, console, printer)


def _wait_healthy(client: ControlClient, loaded: LoadedConfig, names: list[str], console: Console,
                  printer: Printer) -> int:
    """Polls until every service is healthy (0), one has failed (1), or the start-up time is up (1)."""
    from rich.live import Live

    deadline = time.monotonic() + loaded.config.supervisor.startup_timeout + 5
    started = time.monotonic()
    document = _status(client)
    with Live(printer.progress_table(document, names), console=console, transient=True,
              auto_refresh=False, redirect_stdout=False) as live:
        while True:
            services = document["services"]
            failed = [name for name in names if services[name]["state"] == "failed"]
            ready = all(services[n]["state"] == "running" and services[n]["health"] == "healthy" for n in names)
            if failed or ready or time.monotonic() > deadline:
                break
            time.sleep(POLL)
            document = _status(client)
            live.update(printer.progress_table(document, names), refresh=True)
    printer.status_table(document, names)
    if failed:
        for name in failed:
            console.print(f"[red]{escape(name)} failed: {escape(services[name]['error'] or 'it exited')}[/]; "
                          f"its last lines:")
            for line in tail(StatePaths.of(loaded).log(name), 10):
                printer.line(name, line)
        return 1
    if not ready:
        slow = [n for n in names if services[n]["health"] != "healthy"]
        console.print(f"[red]not healthy in time: {', '.join(slow)}[/] (see `tooloo logs`)")
        return 1
    console.print(f"[green]{len(names)} service(s) healthy in {time.monotonic() - started:.2f}s[/]")
    return 0


def _run_foreground(loaded: LoadedConfig, names: list[str], console: Console) -> int:
    import asyncio

    from tooloo_cli.supervisor.manager import Supervisor

    printer = Printer(console, names)
    supervisor = Supervisor(loaded, on_output=printer.write)

    async def announce_health() -> None:
        started = time.monotonic()
        while not all(supervisor.processes[n].health == "healthy" or supervisor.processes[n].state == "failed"
                      for n in names):
            await asyncio.sleep(POLL)
        healthy = [n for n in names if supervisor.processes[n].health == "healthy"]
        console.print(f"[green]tooloo: {len(healthy)}/{len(names)} healthy in {time.monotonic() - started:.2f}s; "
                      f"Ctrl-C stops everything[/]")

    async def main() -> None:
        watcher = asyncio.get_running_loop().create_task(announce_health())
        try:
            await supervisor.run(names)
        finally:
            watcher.cancel()

    asyncio.run(main())
    console.print("tooloo: stopped")
    return 0


def down(loaded: LoadedConfig, names: list[str], console: Console) -> int:
    paths = StatePaths.of(loaded)
    client = connect(paths)
    if client is None:
        console.print("nothing is running")
        return 0
    before = _status(client)["services"]
    grace = loaded.config.supervisor.grace_period
    _, result = client.request("POST", "/stop", {"services": names or None}, timeout=grace * 2 + 10)
    for name in result["stopped"]:
        console.print(f"stopped {name} (pid {before[name]['pid'] or '-'}, port {before[name]['port']})")
    if not result["stopped"]:
        console.print("nothing to stop: " + ", ".join(result["notRunning"]) + " not running")
    if result["supervisorExits"]:
        deadline = time.monotonic() + 5
        while paths.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        console.print("supervisor stopped")
    return 0


def status(loaded: LoadedConfig, console: Console) -> int:
    document = status_document(loaded)
    if document["supervisor"] is None:
        console.print("[dim]no supervisor runs: every service is stopped[/]")
    Printer(console, list(loaded.services)).status_table(document)
    return 0


def restart(loaded: LoadedConfig, names: list[str], console: Console) -> int:
    client = connect(StatePaths.of(loaded))
    if client is None:
        raise ToolooError("nothing is running; start the stack with `tooloo up`")
    client.request("POST", "/restart", {"services": names},
                   timeout=loaded.config.supervisor.grace_period * 2 + 10)
    return _wait_healthy(client, loaded, names, console, Printer(console, names))


def logs(loaded: LoadedConfig, name: str | None, console: Console, lines: int = 20, follow: bool = False) -> int:
    paths = StatePaths.of(loaded)
    names = [name] if name else list(loaded.services)
    printer = Printer(console, names)
    for service in names:
        for line in tail(paths.log(service), lines):
            printer.line(service, line)
    if follow:
        _follow(paths, names, printer)
    return 0


def _follow(paths: StatePaths, names: list[str], printer: Printer) -> None:
    """Prints lines as they are appended, across rotations, until Ctrl-C."""
    offsets: dict[str, tuple[int, int]] = {}  # service -> (inode, offset)
    for name in names:
        path = paths.log(name)
        offsets[name] = (path.stat().st_ino, path.stat().st_size) if path.exists() else (0, 0)
    try:
        while True:
            for name in names:
                path = paths.log(name)
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                inode, offset = offsets[name]
                if stat.st_ino != inode or stat.st_size < offset:
                    inode, offset = stat.st_ino, 0  # rotated: read the new file from its start
                if stat.st_size > offset:
                    with open(path, "rb") as handle:
                        handle.seek(offset)
                        chunk = handle.read()
                    offset += len(chunk)
                    printer.write(name, chunk)
                offsets[name] = (inode, offset)
            time.sleep(0.1)
    except KeyboardInterrupt:
        return
