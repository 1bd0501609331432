"""One supervised service: spawn, health, restart policy, stop.

    process = ManagedProcess("budget", loaded, paths)
    process.start()                    # runs until stopped, restarting on unexpected exits
    await process.stop()               # SIGTERM to its process group, SIGKILL after the grace period
    process.status()                   # state, pid, restarts, health, CPU and RSS of its tree

Each service is `tooloo serve NAME` (run as `python -m tooloo_cli.services NAME`) in a
session of its own, so a signal reaches its whole group, and dies with the supervisor
(PR_SET_PDEATHSIG). An unexpected exit restarts it
after an exponential backoff (0.1 s doubling to 10 s, back to 0.1 s once it has been
healthy for 30 s); too many exits within the crash-loop window mark it `failed` instead
of spinning. Health is probed every 50 ms until the first answer, then calmly; several
failed probes in a row restart the process.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tooloo_cli.config import LoadedConfig
from tooloo_cli.supervisor.logs import RotatingLog
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.ports import port_holder

OutputSink = Callable[[str, bytes], None]
FIRST_PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec hook: the child gets SIGKILL when its parent dies, even by kill -9."""

    def hook() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return hook


async def probe_health(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether GET /health answers 200 (a raw request: the supervisor carries no HTTP client)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: supervisor\r\nConnection: close\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        return status_line.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


class ManagedProcess:
    def __init__(self, name: str, loaded: LoadedConfig, paths: StatePaths,
                 on_output: OutputSink | None = None) -> None:
        self.name = name
        self.loaded = loaded
        self.paths = paths
        self.settings = loaded.config.supervisor
        self.host = loaded.config.stack.host
        self.port = loaded.services[name].port
        self.on_output = on_output
        self.state = "stopped"  # starting, running, backoff, stopping, stopped, failed
        self.health = "unknown"  # healthy, unhealthy, unknown
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.error: str | None = None
        self.started_at: float | None = None  # monotonic, of the current process
        self.healthy_at: float | None = None
        self._exits: deque[float] = deque()
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._ps: Any = None  # psutil.Process of the current pid, for CPU sampling
        self._log = RotatingLog(paths.log(name), self.settings.log_max_bytes, self.settings.log_backups)

    @property
    def active(self) -> bool:
        """Wanted running (starting, running or waiting to restart)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.active:
            return
        self._wanted = True
        self._exits.clear()
        self.error = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        self._wanted = False
        if self._process is not None and self._process.returncode is None:
            self.state = "stopping"
            await self._terminate(self._process)
        if self._task is not None:
            await self._task
            self._task = None
        if self.state != "failed":
            self.state = "stopped"
        await self._wait_port_free()

    def close(self) -> None:
        self._log.close()

    # -- the supervision loop -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial
        while self._wanted:
            holder = port_holder(self.host, self.port)
            if holder is not None:
                pid, program = holder
                owner = f"pid {pid} ({program})" if pid else program
                self._fail(f"port {self.port} is taken by {owner}")
                return
            process = await self._spawn()
            health = asyncio.get_running_loop().create_task(self._watch_health(process))
            pump = asyncio.get_running_loop().create_task(self._pump(process))
            code = await process.wait()
            health.cancel()
            await pump
            self._process = None
            self.pid = None
            self.health = "unknown"
            self.last_exit_code = code
            if not self._wanted:
                return
            now = time.monotonic()
            if self.healthy_at is not None and now - self.healthy_at >= self.settings.backoff_reset_after:
                backoff = self.settings.backoff_initial  # it had settled: start the backoff afresh
            self._exits.append(now)
            while self._exits and now - self._exits[0] > self.settings.crash_loop_window:
                self._exits.popleft()
            if len(self._exits) >= self.settings.crash_loop_limit:
                self._fail(f"crash loop: exited {len(self._exits)} times within "
                           f"{self.settings.crash_loop_window:g} s (last exit code {code})")
                return
            self.state = "backoff"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)
            if self._wanted:
                self.restarts += 1

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.error = reason
        self._wanted = False
        self._write_note(f"tooloo supervisor: {self.name} failed: {reason}")

    async def _spawn(self) -> asyncio.subprocess.Process:
        # `tooloo serve NAME` without the CLI layer (see tooloo_cli/services/__main__.py).
        command = [sys.executable, "-m", "tooloo_cli.services"]
        if self.loaded.source is not None:
            command += ["--config", str(self.loaded.source)]
        command.append(self.name)
        self.state = "starting"
        self.healthy_at = None
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self.loaded.base_dir, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self._process = process
        self.pid = process.pid
        self.started_at = time.monotonic()
        self._ps = None
        return process

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65_536):
            self._log.write(chunk)
            if self.on_output is not None:
                self.on_output(self.name, chunk)

    def _write_note(self, line: str) -> None:
        data = f"{line}\n".encode()
        self._log.write(data)
        if self.on_output is not None:
            self.on_output(self.name, data)

    async def _watch_health(self, process: asyncio.subprocess.Process) -> None:
        """Fast probes until the first answer (or the startup timeout), then calm liveness probes."""
        deadline = time.monotonic() + self.settings.startup_timeout
        while not await probe_health(self.host, self.port):
            if time.monotonic() > deadline:
                self._write_note(f"tooloo supervisor: {self.name} not healthy after "
                                 f"{self.settings.startup_timeout:g} s; restarting it")
                await self._terminate(process)
                return
            await asyncio.sleep(FIRST_PROBE_INTERVAL)
        self.health = "healthy"
        self.healthy_at = time.monotonic()
        if self.state == "starting":
            self.state = "running"
        misses = 0
        while True:
            await asyncio.sleep(self.settings.health_interval)
            if await probe_health(self.host, self.port):
                misses = 0
                self.health = "healthy"
                continue
            misses += 1
            self.health = "unhealthy"
            if misses >= self.settings.liveness_failures:
                self._write_note(f"tooloo supervisor: {self.name} failed {misses} health probes; restarting it")
                await self._terminate(process)
                return

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; returns once it has exited."""
        group = process.pid  # a session leader: its pid is its group's id
        _signal_group(group, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.settings.grace_period)
        except asyncio.TimeoutError:
            _signal_group(group, signal.SIGKILL)
            await process.wait()
        _signal_group(group, signal.SIGKILL)  # anything the service left behind in its group

    async def _wait_port_free(self, timeout: float = 2.0) -> None:
        from tooloo_cli.supervisor.ports import is_free

        deadline = time.monotonic() + timeout
        while not is_free(self.host, self.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- what status shows ----------------------------------------------------------------

    def status(self, children: dict[int, list[int]] | None = None) -> dict[str, Any]:
        """`children` maps a pid to its children's pids (one scan of the process table for all)."""
        now = time.monotonic()
        cpu, rss = self._usage(children or {})
        return {
            "name": self.name,
            "state": self.state,
            "health": self.health,
            "pid": self.pid,
            "port": self.port,
            "uptime": now - self.started_at if self.pid and self.started_at else None,
            "restarts": self.restarts,
            "lastExitCode": self.last_exit_code,
            "error": self.error,
            "cpuPercent": cpu,
            "rssBytes": rss,
            "startupSeconds": self.healthy_at - self.started_at if self.healthy_at and self.started_at else None,
        }

    def _usage(self, children: dict[int, list[int]]) -> tuple[float | None, int | None]:
        """CPU % since the previous call and RSS, summed over the service's process tree."""
        if self.pid is None:
            return None, None
        import psutil

        tree, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, ()))
        try:
            if self._ps is None or self._ps.pid != self.pid:
                self._ps = psutil.Process(self.pid)
            members = [self._ps, *(psutil.Process(pid) for pid in tree[1:])]
            return (sum(member.cpu_percent(None) for member in members),
                    sum(member.memory_info().rss for member in members))
        except psutil.Error:
            return None, None


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass
