"""One supervised service: spawn, health, restart policy, stop.

    process = ManagedProcess("budget", loaded, paths)
    process.start()                    # runs until stopped, restarting on unexpected exits
    await process.stop()               # SIGTERM to its process group, SIGKILL after the grace period
    process.status()                   # state, pid, restarts, health, CPU and RSS of its tree

Each service is `tooloo serve NAME` (run as `python -m tooloo_cli.services NAME`) in a
session of its own, so a signal reaches its whole group, and dies with the supervisor
(PR_SET_PDEATHSIG). An unexpected exit restarts it after an exponential backoff (0.1 s
doubling to 10 s, back to 0.1 s once it has been healthy for 30 s). It is marked `failed`
instead of spinning when it exits too often within the crash-loop window, or when that
many attempts in a row never became healthy. Health is probed every 50 ms until the first
answer, then calmly; several failed probes in a row restart the process.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from functools import cache
from typing import Any

from tooloo_cli.config import LoadedConfig
from tooloo_cli.supervisor.logs import RotatingLog
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.ports import describe_holder, is_free, port_holder

logger = logging.getLogger("tooloo.supervisor")

OutputSink = Callable[[str, bytes], None]
FIRST_PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
PR_SET_PDEATHSIG = 1


@cache
def _prctl() -> Callable[..., int]:
    """libc's prctl, looked up once in the supervisor: never inside a freshly forked child."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec hook: the child gets SIGKILL when its parent dies, even by kill -9."""
    prctl = _prctl()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
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


def stopped_status(name: str, port: int) -> dict[str, Any]:
    """What status shows of a service no supervisor runs."""
    return {"name": name, "state": "stopped", "health": "unknown", "pid": None, "port": port, "uptime": None,
            "restarts": 0, "lastExitCode": None, "error": None, "cpuPercent": None, "rssBytes": None,
            "startupSeconds": None}


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
        self.last_failure: str | None = None  # kept after a stop, unlike `error`
        self.started_at: float | None = None  # monotonic, of the current process
        self.healthy_at: float | None = None
        self._exits: deque[float] = deque()
        self._attempts_never_healthy = 0
        self._wanted = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._usage_probes: dict[int, Any] = {}  # pid -> psutil.Process, kept so CPU % has a previous sample
        self._log_failed = False
        self._log = RotatingLog(paths.log(name), self.settings.log_max_bytes, self.settings.log_backups)

    @property
    def active(self) -> bool:
        """Wanted running (starting, running or waiting to restart)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.active:
            return
        self._wanted = True
        self._stopping.clear()
        self._exits.clear()
        self._attempts_never_healthy = 0
        self.error = self.last_failure = None
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        """Stops the service wherever it is: starting, running or waiting to restart."""
        self._wanted = False
        self._stopping.set()  # wakes a backoff pause at once
        process = self._process
        if process is not None and process.returncode is None:
            self.state = "stopping"
            await self._terminate(process)
        if self._task is not None:
            await self._task
            self._task = None
        self.state = "stopped"
        self.error = None
        await self._wait_port_free()

    def close(self) -> None:
        self._log.close()

    # -- the supervision loop -----------------------------------------------------------

    async def _run(self) -> None:
        backoff = self.settings.backoff_initial
        first = True
        while self._wanted:
            holder = port_holder(self.host, self.port)
            if holder is not None:
                self._fail(f"port {self.port} is taken by {describe_holder(holder)}")
                return
            if not first:
                self.restarts += 1
            first = False
            code = await self._run_once()
            if not self._wanted:
                return
            now = time.monotonic()
            if self.healthy_at is not None and now - self.healthy_at >= self.settings.backoff_reset_after:
                backoff = self.settings.backoff_initial  # it had settled: start the backoff afresh
            self._attempts_never_healthy = 0 if self.healthy_at is not None else self._attempts_never_healthy + 1
            self._exits.append(now)
            while self._exits and now - self._exits[0] > self.settings.crash_loop_window:
                self._exits.popleft()
            if len(self._exits) >= self.settings.crash_loop_limit:
                self._fail(f"crash loop: exited {len(self._exits)} times within "
                           f"{self.settings.crash_loop_window:g} s (last exit code {code})")
                return
            if self._attempts_never_healthy >= self.settings.crash_loop_limit:
                self._fail(f"never became healthy in {self._attempts_never_healthy} attempts "
                           f"(last exit code {code})")
                return
            self.state = "backoff"
            await self._pause(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _run_once(self) -> int:
        """Spawns the service and returns its exit code once it has exited, whatever happened meanwhile."""
        process = await self._spawn()
        if not self._wanted:  # stopped while it was being spawned: nobody else will end it
            await self._terminate(process)
        loop = asyncio.get_running_loop()
        health = loop.create_task(self._watch_health(process))
        pump = loop.create_task(self._pump(process))
        try:
            return await process.wait()
        finally:
            health.cancel()
            await asyncio.gather(pump, health, return_exceptions=True)
            _signal_group(process.pid, signal.SIGKILL)  # whatever it left behind in its group
            self.last_exit_code = process.returncode
            self._process = None
            self.pid = None
            self.health = "unknown"

    async def _pause(self, seconds: float) -> None:
        """Sleeps `seconds`, or less when a stop comes in meanwhile."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.error = self.last_failure = reason
        self._wanted = False
        self._emit(f"tooloo supervisor: {self.name} failed: {reason}\n".encode())

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
        return process

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65_536):
            self._emit(chunk)

    def _emit(self, data: bytes) -> None:
        """To the log file and the output sink; a failure of either is reported once and the pipe
        keeps being drained, so the service never blocks on a full pipe."""
        try:
            self._log.write(data)
            self._log_failed = False
        except OSError as exc:
            if not self._log_failed:
                logger.error("%s: cannot write its log %s: %s", self.name, self._log.path, exc)
            self._log_failed = True
        if self.on_output is not None:
            try:
                self.on_output(self.name, data)
            except Exception as exc:  # a closed terminal, say: the service itself must not suffer
                logger.error("%s: output stopped: %s", self.name, exc)
                self.on_output = None

    async def _watch_health(self, process: asyncio.subprocess.Process) -> None:
        """Fast probes until the first answer (or the startup timeout), then calm liveness probes."""
        deadline = time.monotonic() + self.settings.startup_timeout
        while not await probe_health(self.host, self.port):
            if time.monotonic() > deadline:
                self._emit(f"tooloo supervisor: {self.name} not healthy after "
                           f"{self.settings.startup_timeout:g} s; restarting it\n".encode())
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
                self._emit(f"tooloo supervisor: {self.name} failed {misses} health probes; restarting it\n".encode())
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

    async def _wait_port_free(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while not is_free(self.host, self.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- what status shows ----------------------------------------------------------------

    def status(self, children: dict[int, list[int]] | None = None) -> dict[str, Any]:
        """The service's state; with `children` (pid -> child pids, one scan of the process
        table for all services) also the CPU % and RSS of its process tree."""
        now = time.monotonic()
        cpu, rss = self._usage(children) if children is not None else (None, None)
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
            self._usage_probes.clear()
            return None, None
        import psutil

        tree, pending = [], [self.pid]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, ()))
        try:
            self._usage_probes = {pid: self._usage_probes.get(pid) or psutil.Process(pid) for pid in tree}
            members = list(self._usage_probes.values())
            return (sum(member.cpu_percent(None) for member in members),
                    sum(member.memory_info().rss for member in members))
        except psutil.Error:
            return None, None


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass
