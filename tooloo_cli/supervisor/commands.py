"""The supervisor's commands as the CLI runs them: up, down, status, restart, logs.

    exit_code = up(load_config(), ["web", "budget"], console)

Each is a thin client of the supervisor's control API, except `up --foreground` (the
supervisor in this process) and `logs` (which reads the log files, so that it works
whether or not a supervisor runs). The detached supervisor itself starts from
`tooloo_cli/supervisor/__main__.py`.

Names are services (meaning all their replicas) or replicas (`budget.2`). `up` starts
what the named services depend on too, and waits until each replica is alive and ready.

`up` and `down` take the state directory's launch lock: a `down` issued while an `up` is
still launching waits for the launch, then stops what it started (it wins), and the
`up` reports that its stack was stopped. A `down` that runs before that `up` has even
reached the lock leaves its time in the state directory, and the `up` gives up.
`up --foreground` holds the lock only until its supervisor answers, so a second `up`
elsewhere answers at once. `up` and `restart` hand
the supervisor the configuration as it is now (see environment.py).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.stack import Stack, probe_host, stack_of
from tooloo_cli.supervisor.control import ControlClient, SupervisorUnavailable
from tooloo_cli.supervisor.daemon import LAUNCH_TIMEOUT, connect, launch, recorded_pid, status_document
from tooloo_cli.supervisor.environment import handover
from tooloo_cli.supervisor.lock import FileLock
from tooloo_cli.supervisor.logs import Entry, Follower, entries, read, stamp, wanted
from tooloo_cli.supervisor.paths import StatePaths, write_private
from tooloo_cli.ports import describe_holder, port_holder
from tooloo_cli.supervisor.printer import PlainConsole, Printer
from tooloo_cli.supervisor.printer import escape as _escape
from tooloo_cli.supervisor.standby import Standby

if TYPE_CHECKING:
    from rich.console import Console

ACTIVE = ("waiting", "starting", "running", "backoff")
DETAIL_LOG_LINES = 5  # of a replica's log, in `tooloo status NAME`
POLL = 0.05  # between two looks at a supervisor too old to be waited on (no version in /states)
STATES_WAIT = 2.0  # seconds one GET /states?after=… may be held while `up` waits for a change
LAUNCH_LOCK_WAIT = LAUNCH_TIMEOUT + 5  # a launch holds the lock at most LAUNCH_TIMEOUT


def _launch_lock(paths: StatePaths) -> FileLock:
    return FileLock(paths.launch_lock, timeout=LAUNCH_LOCK_WAIT, holder="another `tooloo up` or `down`")


class StoppedWhileStarting(ToolooError):
    """The stack was stopped (by `tooloo down`, say) before it was healthy."""


def _status(client: ControlClient) -> dict[str, Any]:
    return client.call("GET", "/status")


def _taken_ports(stack: Stack, names: list[str]) -> list[str]:
    problems = []
    for replica in stack.replicas(names):
        if replica.port is None:
            continue
        holder = port_holder(probe_host(stack.specs[replica.service].bind), replica.port)
        if holder is not None:
            problems.append(f"{replica.name}: port {replica.port} is taken by {describe_holder(holder)}")
    return problems


def _healthy(service: dict[str, Any]) -> bool:
    """Alive and ready: what `up` waits for."""
    return service["state"] == "running" and service["health"] == "healthy" and service.get("ready", True)


def replica_names(stack: Stack, names: list[str], with_dependencies: bool = False) -> list[str]:
    """The replicas meant by service or replica `names` (all when empty), optionally with what they depend on."""
    if with_dependencies and names:
        names = [*stack.with_dependencies([name for name in names if name in stack.specs]), *names]
    return [replica.name for replica in stack.replicas(names or None)]


def _waited(started: float) -> float:
    """How long the person has waited for this command: since its process began (its imports and the
    configuration's reading included), and at least since `started` (a time.monotonic())."""
    from tooloo_cli.procfs import age_or_none

    waited = time.monotonic() - started
    return max(age_or_none(os.getpid()) or 0.0, waited)


def _dependency_levels(stack: Stack) -> int:
    """How many waves a start or a stop of the whole stack takes (one per level of `depends_on`)."""
    return len(stack.stop_waves(list(stack.specs)))


def _check_environment(stack: Stack, names: list[str]) -> None:
    """Reads the env_file of each service about to start: a missing one is a configuration error now."""
    for spec in stack.specs.values():
        if any(replica.name in names for replica in spec.replicas):
            spec.environment()


def up(loaded: LoadedConfig, names: list[str], console: Console | PlainConsole, foreground: bool = False,
       standby: Standby | None = None, wait: bool = True, timeout: float | None = None,
       launch_supervisor: bool = True) -> int:
    """Starts `names` and what they depend on; with a `standby` (standby.py), that is the supervisor
    launched, if one must be, and it is ended if not. Unless `launch_supervisor` (`tooloo start`),
    the supervisor must be running already.

    Detached, it waits until they are healthy and ready (until `timeout` seconds after the command
    began, else as long as their startup timeouts allow), unless not `wait`: then it returns once the supervisor has them to start.
    """
    try:
        return _up(loaded, names, console, foreground, standby, wait, timeout, launch_supervisor)
    finally:
        if standby is not None:
            standby.cancel()  # unless it was told what to run: it must not linger


def _up(loaded: LoadedConfig, names: list[str], console: Console | PlainConsole, foreground: bool,
        standby: Standby | None, wait: bool, timeout: float | None, launch_supervisor: bool) -> int:
    paths = StatePaths.of(loaded)
    paths.ensure()
    stack = stack_of(loaded)
    asked, names = names, replica_names(stack, names, with_dependencies=True)
    _check_environment(stack, names)
    # One `up` at a time decides whether to launch: two at once must not start two supervisors.
    lock = _launch_lock(paths)
    with lock:
        verb = "up" if launch_supervisor else "start"
        if _down_requested_since_this_began(paths):
            console.print(f"[red]tooloo {verb}: a `tooloo down` was issued while this `{verb}` was starting; "
                          "nothing was started[/]")
            return 1
        client = connect(paths)
        if client is None and not launch_supervisor:
            raise ToolooError(f"no supervisor runs for this stack{_no_stack_here(loaded)}; "
                              f"`tooloo up {' '.join(asked)}` starts one with them")
        if client is not None and standby is not None:
            standby.cancel()  # one runs already: the standby ends now, not after this `up` has waited
        if foreground and client is not None:
            raise ToolooError("a supervisor already runs for this stack; `tooloo down` first to run in the foreground")
        current = client.call("GET", "/states")["services"] if client else {}
        running = bool(current) and all(name in current and _healthy(current[name]) for name in names)
        missing = [name for name in names if current.get(name, {}).get("state") not in ACTIVE]
        problems = _taken_ports(stack, missing)
        if problems:
            for problem in problems:
                console.print(f"[red]tooloo {verb}: {_escape(problem)}[/]")
            console.print("nothing was started; stop that process or change the port in tooloo.toml")
            return 1
        if foreground:
            return _run_foreground(loaded, missing, console, on_ready=lock.release)
        if client is None:
            client, started = launch(loaded, missing, standby), missing
        else:  # with nothing missing too: the supervisor's own settings ([supervisor] metrics_port) follow the file
            started = client.call("POST", "/start", {"services": missing or names,
                                                     **handover(loaded, os.environ)})["started"]
        if running:
            console.print("everything asked for is already running")
            Printer(console, names).status_table(_status(client), names)  # type: ignore[arg-type]
            return 0
    if not wait:
        doing = f"starting {', '.join(started)} under the supervisor" if started else "already starting"
        console.print(f"{doing}; not waiting (`tooloo status` shows how they are doing)")
        return 0
    return _wait_healthy(client, loaded, stack, names, console, timeout, "up" if launch_supervisor else "start")


class _Progress:
    """The start-up progress, redrawn in place while `up` waits: on a terminal only, and only when
    a state changed (a transient display that nobody sees, or a redraw of what is already shown,
    is CPU taken from the services starting beside it)."""

    def __init__(self, console: Console | PlainConsole, printer: Printer, names: list[str]) -> None:
        self.printer, self.names = printer, names
        self.live = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(console=console, transient=True, auto_refresh=False, redirect_stdout=False)

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def show(self, states: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.update(self.printer.progress_table(states, self.names), refresh=True)

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)


def _wait_healthy(client: ControlClient, loaded: LoadedConfig, stack: Stack, names: list[str],
                  console: Console | PlainConsole, timeout: float | None = None, verb: str = "up") -> int:
    """Waits until every service is healthy (0), one has failed (1), or the start-up time (`timeout`
    when given) is up (1).

    Each GET /states is answered when something changed (or after STATES_WAIT), so this wakes
    when a service does, and is idle in between.
    """
    # A chain of dependencies starts one link after another: each may take its whole startup timeout.
    startup = max(spec.startup_timeout for spec in stack.specs.values())
    started = time.monotonic()
    # A given timeout counts from the command's start, as the time reported does: what the person waits.
    deadline = started + (startup * _dependency_levels(stack) + 5 if timeout is None
                          else timeout - _waited(started))
    printer = Printer(console, names)
    try:
        states = _states_while_starting(client)
        with _Progress(console, printer, names) as progress:
            while True:
                services = states["services"]
                failed = [name for name in names if services[name]["state"] in ("failed", "exited")]
                ready = all(_healthy(services[name]) for name in names)
                if any(services[name]["state"] == "stopped" for name in names):
                    raise StoppedWhileStarting("stopped while it was starting (by `tooloo down`?)")
                if failed or ready or time.monotonic() > deadline:
                    break
                progress.show(states)
                # Without a progress to draw, one answer once all is settled, not one at every change.
                states = _states_while_starting(client, states.get("version"), deadline - time.monotonic(),
                                                settled=None if progress.live is not None else names)
    except KeyboardInterrupt:
        console.print("interrupted: the supervisor keeps starting the stack in the background; "
                      "`tooloo status` to see it, `tooloo down` to stop it")
        return 130
    except StoppedWhileStarting as exc:
        console.print(f"[red]tooloo {verb}: what it started was {_escape(str(exc))}[/]")
        return 1
    # The deep check's requests go out now, and are collected after the table: it is what `up` waits on last.
    deep = _DeepCheck(stack, names) if ready and not failed else None
    printer.status_table(_status(client), names)
    if failed:
        for name in failed:
            console.print(f"[red]{_escape(name)} {services[name]['state']}: "
                          f"{_escape(services[name]['error'] or 'it exited')}[/]; its last lines:")
            printer.entries(name, read(StatePaths.of(loaded).log(name), last=10))
        return 1
    if not ready:
        slow = [n for n in names if not _healthy(services[n])]
        console.print(f"[red]not ready in time: {', '.join(slow)}[/] (see `tooloo status` and `tooloo logs`)")
        return 1
    console.print(f"[green]{len(names)} service(s) healthy and ready in {_waited(started):.2f}s[/]")
    assert deep is not None
    for name, failing in deep.result().items():
        console.print(f"[yellow]{_escape(name)} is ready, but cannot use {_escape(', '.join(failing))} yet "
                      f"(GET /dependencies; `tooloo up` what it calls)[/]")
    return 0


def _failing_dependencies(stack: Stack, names: list[str]) -> dict[str, list[str]]:
    """The deep check of each started replica that calls siblings: replica → what it cannot use.

    GET {url}/dependencies, all at once: an http:// url through the loopback client (no proxy,
    whatever http_proxy says), any other through urllib, as before it.
    """
    from urllib.parse import urlsplit

    from tooloo_cli.loopback import LoopbackError, gather, request

    asked = [(replica.name, replica.url) for replica in stack.replicas(names)
             if stack.specs[replica.service].calls and replica.url is not None]

    def answer_of(url: str) -> tuple[int, bytes] | None:
        parts = urlsplit(url)
        try:
            if parts.scheme == "http" and parts.hostname:
                answer = request((parts.hostname, parts.port or 80), "GET", f"{parts.path.rstrip('/')}/dependencies",
                                 timeout=2.0)
                return answer.status, answer.body
            return _urllib_get(f"{url}/dependencies", timeout=2.0)
        except (LoopbackError, OSError, ValueError):
            return None  # the check itself could not be made: `up` has already seen it ready

    def failing(url: str) -> list[str]:
        answer = answer_of(url)
        if answer is None or answer[0] == 200:
            return []  # 200: everything it calls answers
        try:
            return list(json.loads(answer[1]).get("failing", [])) or ["its dependencies"]
        except (ValueError, AttributeError, TypeError):
            return ["its dependencies"]

    found = gather([lambda url=url: failing(url) for _, url in asked])  # type: ignore[misc]
    return {name: unusable for (name, _), unusable in zip(asked, found) if unusable}


class _DeepCheck:
    """_failing_dependencies, asked in a thread of its own from the moment it is made."""

    def __init__(self, stack: Stack, names: list[str]) -> None:
        import threading

        self._found: dict[str, list[str]] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(stack, names), daemon=True)
        self._thread.start()

    def _run(self, stack: Stack, names: list[str]) -> None:
        try:
            self._found = _failing_dependencies(stack, names)
        except BaseException as exc:  # raised again in the caller's thread, by result()
            self._error = exc

    def result(self) -> dict[str, list[str]]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._found


def _urllib_get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body) of GET `url` through urllib, proxies ignored (an https:// service url, say)."""
    import urllib.error
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def _states_while_starting(client: ControlClient, after: int | None = None, left: float = 0.0,
                           settled: list[str] | None = None) -> dict[str, Any]:
    """The states now, or (`after` a version) once they changed since, within `left` seconds at most;
    with `settled`, once those replicas are all ready or one has failed, exited or stopped."""
    try:
        if after is None:
            if left > 0:  # a supervisor from before /states had versions: look again in a moment
                time.sleep(POLL)
            return client.call("GET", "/states")
        wait = min(max(left, 0.0), STATES_WAIT)
        query = f"after={after}&wait={wait:.3f}" + (f"&settled={quote(','.join(settled))}" if settled else "")
        return client.call("GET", f"/states?{query}", timeout=wait + 5)
    except SupervisorUnavailable:
        raise StoppedWhileStarting("stopped while it was starting: its supervisor is gone "
                                   "(by `tooloo down`?)") from None


def _run_foreground(loaded: LoadedConfig, names: list[str], console: Console | PlainConsole,
                    on_ready: Callable[[], None]) -> int:
    """The supervisor in this process, its services' lines printed; exit 1 if any of them failed.

    `on_ready` runs once its control socket answers (it releases the launch lock).
    """
    import asyncio

    from tooloo_cli.supervisor.manager import Supervisor

    printer = Printer(console, names)
    supervisor = Supervisor(loaded, on_output=printer.entries, detached=False,
                            handed=handover(loaded, os.environ)["environment"])

    async def announce_health() -> None:
        started = time.monotonic()
        while not all(supervisor.processes[n].ready or supervisor.processes[n].state in ("failed", "exited")
                      for n in names):
            await asyncio.sleep(POLL)
        ready = [n for n in names if supervisor.processes[n].ready]
        console.print(f"[green]tooloo: {len(ready)}/{len(names)} ready in {_waited(started):.2f}s; "
                      f"Ctrl-C stops everything[/]")

    async def main() -> None:
        watcher = asyncio.get_running_loop().create_task(announce_health())
        try:
            await supervisor.run(names, on_ready=on_ready)
        finally:
            watcher.cancel()

    asyncio.run(main())
    failed = [name for name in names if supervisor.processes[name].last_failure]
    console.print("tooloo: stopped" + (f" ({', '.join(failed)} failed)" if failed else ""))
    if failed:
        return 1  # what went wrong says more than how it was ended
    return 130 if supervisor.interrupted else 0


def _down_requested_since_this_began(paths: StatePaths) -> bool:
    try:
        requested = float(paths.down_requested.read_text())
    except (OSError, ValueError):
        return False
    return requested > _this_process_began()


def _this_process_began() -> float:
    """When this process began, in wall-clock seconds, rounded up to the kernel's tick (10 ms).

    From /proc/self/stat's start time, which counts from boot on CLOCK_BOOTTIME. psutil's
    create_time() adds it to /proc/stat's btime, a whole second, which puts the start up to
    a second early: a `tooloo down` that had finished just before this `up` was started then
    read as one issued since, and `down; up` started nothing. Rounded up, a down that came
    before is never taken for one that came after; one in this process's first tick (the
    interpreter's start, before anything was done) may be taken for one that came before.
    """
    from tooloo_cli.procfs import TICKS, age_or_none

    age = age_or_none(os.getpid())
    if age is None:  # no /proc (or not Linux's), no CLOCK_BOOTTIME
        import psutil

        return psutil.Process().create_time()
    return time.time() - age + 1 / TICKS


def down(loaded: LoadedConfig, names: list[str], console: Console | PlainConsole,
         keep_supervisor: bool = False) -> int:
    """Stops `names` (all when none); the supervisor exits once nothing is left, unless `keep_supervisor`
    (`tooloo stop`: what it stopped can be started again with `tooloo start`)."""
    paths = StatePaths.of(loaded)
    # Made even where nothing ran yet: it keeps this `down`'s time, and an `up` that began before it
    # (and has not reached the lock) gives up when it gets there.
    paths.ensure()
    # A launch in progress is waited for, then stopped: `down` must win over an `up` it raced.
    with _launch_lock(paths):
        if not names:
            write_private(paths.down_requested, f"{time.time()}\n")
        client = connect(paths)
    if client is None:
        console.print(f"nothing is running{_escape(_no_stack_here(loaded))}")
        return 0
    before = client.call("GET", "/states")["services"]
    supervisor = _Exit(recorded_pid(paths))  # taken hold of while it surely runs: no other process has its pid
    try:
        return _stop(client, loaded, names, console, before, paths, supervisor, keep_supervisor)
    finally:
        supervisor.close()


def _stop(client: ControlClient, loaded: LoadedConfig, names: list[str], console: Console | PlainConsole,
          before: dict[str, Any], paths: StatePaths, supervisor: _Exit, keep_supervisor: bool) -> int:
    stack = _stack_if_possible(loaded)
    specs = list(stack.specs.values()) if stack is not None else []
    grace = max([loaded.config.supervisor.grace_period, *(spec.grace_period for spec in specs)])
    waves = _dependency_levels(stack) if stack is not None else 1
    # A grace period per wave at worst, and one to spare (SIGKILL, then the ports freed).
    result = client.call("POST", "/stop", {"services": names or None, "keepSupervisor": keep_supervisor},
                         timeout=grace * (waves + 1) + 10)
    for name in result["stopped"]:
        console.print(f"stopped {name} (pid {before[name]['pid'] or '-'}, port {before[name]['port']})")
    if not result["stopped"]:
        console.print("nothing to stop: " + ", ".join(result["notRunning"]) + " not running")
    if result["supervisorExits"]:
        deadline = time.monotonic() + 5
        while paths.pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        # Its pid file goes first, its process last: `down` promises that no process is left.
        gone = not paths.pid_file.exists() and supervisor.wait(deadline - time.monotonic())
        console.print("supervisor stopped" if gone
                      else "the supervisor is still shutting down (`tooloo status` shows when it is gone)")
    return 0


class _Exit:
    """The end of one process, waited for by a pidfd (Linux 5.3+): it names that process and no later one
    given the same pid. Without one, the pid is looked at every 5 ms."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.fd = pid, None
        if pid is not None and hasattr(os, "pidfd_open"):
            try:
                self.fd = os.pidfd_open(pid)
            except OSError:  # already gone, or not allowed: looked at by its pid instead
                self.fd = None

    def wait(self, timeout: float) -> bool:
        """Whether it has exited within `timeout` seconds (True when there was no process to wait for)."""
        if self.pid is None:
            return True
        if self.fd is not None:
            import select

            return bool(select.select([self.fd], [], [], max(timeout, 0))[0])
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # another user's: not ours to wait for
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _no_stack_here(loaded: LoadedConfig) -> str:
    """What "nothing is running" should add when no tooloo.toml was found: the person is likely in
    another directory than their stack's, whose state (and supervisor) this one cannot see."""
    if loaded.source is not None or loaded.lenient:
        return ""
    return (f" here: no tooloo.toml in {loaded.base_dir} or above it, so this is the built-in stack, "
            f"with its state in {loaded.state_path()}")


def _stack_if_possible(loaded: LoadedConfig) -> Stack | None:
    """The stack, when the configuration makes one (what a lenient `down` or `logs` read may not)."""
    try:
        return stack_of(loaded)
    except ToolooError:
        return None


def status(loaded: LoadedConfig, console: Console | PlainConsole, names: list[str] | None = None) -> int:
    """The table of every replica; with `names` (services or replicas), each of those in detail."""
    document = status_document(loaded, names)
    if document["supervisor"] is None:
        console.print(f"[dim]no supervisor runs: every service is stopped{_escape(_no_stack_here(loaded))}[/]")
    printer = Printer(console, list(document["services"]) or ["-"])
    if not names:
        printer.status_table(document)
        return 0
    paths = StatePaths.of(loaded)
    for index, (name, service) in enumerate(document["services"].items()):
        if index:
            console.print("")
        printer.detail(name, service, str(paths.log(name)), read(paths.log(name), last=DETAIL_LOG_LINES))
    return 0


LS_COLUMNS = (("services", "right"), ("supervisor", "right"), ("up", "right"), ("state directory", "left"),
              ("config", "left"))


def ls(console: Console | PlainConsole, as_json: bool = False) -> int:
    """The stacks whose supervisor runs on this machine (this user's), each with its services running."""
    from tooloo_cli.procfs import age_or_none
    from tooloo_cli.supervisor.registry import stacks
    from tooloo_cli.units import duration

    found = []
    for record in stacks():
        try:
            document = ControlClient(StatePaths(Path(record["stateDir"])).socket).call("GET", "/states", timeout=2)
            services = document["services"].values()
            record |= {"running": sum(service["state"] == "running" for service in services),
                       "replicas": len(services)}
        except (ToolooError, OSError, KeyError, TypeError, AttributeError):  # stopping, refusing, not answering
            record |= {"running": None, "replicas": None}
        record["uptime"] = age_or_none(record["pid"])
        found.append(record)
    if as_json:
        console.file.write(json.dumps({"stacks": found}, indent=2) + "\n")
        return 0
    if not found:
        console.print("no stack runs on this machine (for this user)")
        return 0
    Printer(console, ["-"]).table(LS_COLUMNS, [[
        "not answering" if record["running"] is None else f"{record['running']}/{record['replicas']} running",
        f"pid {record['pid']}", duration(record["uptime"]), _escape(record["stateDir"]), _escape(record["config"] or "-")]
        for record in found], dropped=("config",), where_the_rest_is="`tooloo ls --json` has it")
    return 0


def kill(loaded: LoadedConfig, names: list[str], signum: int, console: Console | PlainConsole) -> int:
    """Sends `signum` to the named replicas' processes; 1 when none of them was running."""
    from tooloo_cli.supervisor.restart import signal_name

    client = connect(StatePaths.of(loaded))
    if client is None:
        raise ToolooError(f"nothing is running{_no_stack_here(loaded)}; start the stack with `tooloo up`")
    result = client.call("POST", "/kill", {"services": names, "signal": signum})
    for name, pid in result["signalled"].items():
        console.print(f"sent {signal_name(signum)} to {_escape(name)} (pid {pid})")
    for name in result["notRunning"]:
        console.print(f"[yellow]{_escape(name)} is not running: nothing to signal[/]")
    return 0 if result["signalled"] else 1


def restart(loaded: LoadedConfig, names: list[str], console: Console | PlainConsole) -> int:
    stack = stack_of(loaded)
    client = connect(StatePaths.of(loaded))
    if client is None:
        raise ToolooError(f"nothing is running{_no_stack_here(loaded)}; start the stack with `tooloo up`")
    _check_environment(stack, replica_names(stack, names))
    grace = max(spec.grace_period for spec in stack.specs.values())
    result = client.call("POST", "/restart", {"services": names, **handover(loaded, os.environ)},
                         timeout=grace * (_dependency_levels(stack) + 1) + 10)
    restarted = result["restarted"]
    return _wait_healthy(client, loaded, stack, restarted, console, verb="restart")


def logs(loaded: LoadedConfig, asked: list[str], console: Console | PlainConsole, lines: int | None = 20,
         follow: bool = False, since: float | None = None, until: float | None = None,
         grep: re.Pattern[str] | None = None, as_json: bool = False) -> int:
    """The logs of the services or replicas `asked` (all when none), interleaved by time: of each,
    its last `lines` entries (every one when None) from `since` to `until` whose line matches
    `grep`, then with `follow` new ones as they come. `as_json`: one JSON object a line."""
    paths = StatePaths.of(loaded)
    stack = _stack_if_possible(loaded)
    if stack is None:  # a lenient load: the defaults' services, or those asked for
        names = list(asked) or list(loaded.services)
    else:  # a lenient load's stack knows only the built-in services: the others asked for are kept as named
        known = [name for name in asked if name in stack.names()]
        names = replica_names(stack, known) if known or not asked else []
        names += [name for name in asked if name not in known and name not in names]
    # And whatever else has a log here: replicas and services of a configuration since changed.
    logged = sorted(path.name[:-len(".log")] for path in (paths.root / "logs").glob("*.log")
                    if path != paths.supervisor_log)
    if asked:  # those asked for are followed even without a log yet: -f shows its first lines
        names += [other for other in logged
                  if any(other.startswith(f"{name}.") for name in asked) and other not in names]
    else:
        names = [name for name in names if paths.log(name).exists()] or names
        names += [other for other in logged if other not in names]
    if not names:
        if not as_json:  # a script reading JSON lines reads none
            console.print("no service has a log here")
        return 0
    show = _json_lines(console, flush=follow) if as_json else Printer(console, names).entry
    # Followers first: each reads from where the past below stops, so no line is shown twice or missed.
    followers = {name: Follower(paths.log(name)) for name in names} if follow else {}

    def past(name: str) -> Iterator[tuple[str, Entry]]:
        end = followers[name].position if follow else None
        found = read(paths.log(name), lines, since, until, grep, end) if lines is not None \
            else entries(paths.log(name), since, until, grep, end)  # every one: read as merged, not held
        return ((name, entry) for entry in found)

    for name, entry in heapq.merge(*(past(name) for name in names), key=_when):
        show(name, entry)
    console.file.flush()
    return _follow(followers, show, since, grep) if follow else 0


def _when(logged: tuple[str, Entry]) -> float:
    return logged[1].at or 0.0


def _json_lines(console: Console | PlainConsole, flush: bool) -> Callable[[str, Entry], None]:
    """Entries as JSON lines: {"ts", "service", "replica", "stream", "line"}, `ts` in UTC (or null);
    each flushed at once with `flush` (following), else with the last."""
    def show(name: str, entry: Entry) -> None:
        service, _, index = name.rpartition(".")
        service, replica = (service, int(index)) if service and index.isdigit() else (name, 1)
        console.file.write(json.dumps({"ts": None if entry.at is None else stamp(entry.at), "service": service,
                                       "replica": replica, "stream": entry.stream, "line": entry.text},
                                      ensure_ascii=False) + "\n")
        if flush:
            console.file.flush()
    return show


def _follow(followers: dict[str, Follower], show: Callable[[str, Entry], None], since: float | None,
            grep: re.Pattern[str] | None) -> int:
    """Prints entries as they are appended, across rotations, each look's in time order, until Ctrl-C
    (then 130, as any command)."""
    try:
        while True:
            added = sorted(((name, entry) for name, follower in followers.items() for entry in follower.new()
                            if wanted(entry, since, None, grep)), key=_when)
            for name, entry in added:
                show(name, entry)
            time.sleep(0.1)
    except KeyboardInterrupt:
        return 130
    finally:
        for follower in followers.values():
            follower.close()
