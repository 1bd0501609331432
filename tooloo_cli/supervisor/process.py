"""One supervised service: spawn, health, restart policy, stop.

    process = ManagedProcess("budget", loaded, paths)
    process.start(loaded, handed)      # runs until stopped, restarting on unexpected exits
    await process.stop()               # SIGTERM to its process group, SIGKILL after the grace period
    process.status()                   # state, pid, restarts, health, CPU and RSS of its tree

Each service is `tooloo serve NAME` (run as `python -m tooloo_cli.services NAME`) in a
session of its own, so a signal reaches its whole group, and dies with the supervisor
(PR_SET_PDEATHSIG). Each start takes the configuration and the environment handed over
by the command that asked for it (see environment.py); restarts after a crash reuse them.
An unexpected exit restarts it after an exponential backoff (0.1 s doubling to 10 s, back
to 0.1 s once it has been healthy for 30 s). It is marked `failed` instead of spinning
when it exits too often within the crash-loop window, or when that many attempts in a
row never became healthy, and at once when it exits with code 2: a service says so when
it refuses to start on its configuration or data, which a restart would not change (its
last `tooloo serve:` line becomes the reason). Health is probed every 50 ms until the
first answer, then calmly; several failed probes in a row restart the process.
The last warning a service logged (a `WARNING tooloo…` line: a database moved aside, a
cache on a full disk) is kept for `tooloo status`.
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
from tooloo_cli.ports import describe_holder, is_free, port_holder
from tooloo_cli.supervisor.environment import service_environment
from tooloo_cli.supervisor.logs import RotatingLog
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.usage import TreeUsage

logger = logging.getLogger("tooloo.supervisor")

OutputSink = Callable[[str, bytes], None]
FIRST_PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 1.0
PR_SET_PDEATHSIG = 1
REFUSED_TO_START = 2  # the exit code of a service that must not be restarted as things are
_LAST_WORDS = b"tooloo serve: "  # how a service states why it exits
_WARNINGS = (b"WARNING tooloo", b"ERROR tooloo")  # how a service's own warnings begin (serve.LOG_FORMAT)


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
            "restarts": 0, "lastExitCode": None, "error": None, "lastWarning": None, "cpuPercent": None,
            "rssBytes": None, "startupSeconds": None}


class ManagedProcess:
    def __init__(self, name: str, loaded: LoadedConfig, paths: StatePaths,
                 on_output: OutputSink | None = None) -> None:
        self.name = name
        self.paths = paths
        self.handed: dict[str, str] = {}
        self._configure(loaded)
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
        self.usage = TreeUsage()
        self.last_words: str | None = None  # the last `tooloo serve:` line of the current process
        self.last_warning: str | None = None
        self._partial = b""
        self._log_failed = False
        self._log = RotatingLog(paths.log(name), self.settings.log_max_bytes, self.settings.log_backups)

    def _configure(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        self.settings = loaded.config.supervisor
        self.host = loaded.config.stack.host
        self.port = loaded.services[self.name].port

    @property
    def active(self) -> bool:
        """Wanted running (starting, running or waiting to restart)."""
        return self._task is not None and not self._task.done()

    def start(self, loaded: LoadedConfig | None = None, handed: dict[str, str] | None = None) -> None:
        """Starts supervising, from `loaded` and the `handed` environment when given (else the last ones)."""
        if self.active:
            return
        if loaded is not None:
            self._configure(loaded)
        if handed is not None:
            self.handed = dict(handed)
        self._wanted = True
        self._stopping.clear()
        self._exits.clear()
        self._attempts_never_healthy = 0
        self.error = self.last_failure = self.last_warning = None
        self.state = "starting"  # at once: a poll right after the start must not read "stopped"
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
            if code == REFUSED_TO_START:
                self._fail(self.last_words or f"it refused to start (exit code {code}); see `tooloo logs {self.name}`")
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
        self.last_words = None
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=self.loaded.base_dir, start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
            env=service_environment(self.loaded, self.name, os.environ, self.handed),
        )
        self._process = process
        self.pid = process.pid
        self.started_at = time.monotonic()
        return process

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65_536):
            self._note(chunk)
            self._emit(chunk)
        self._partial = b""

    def _note(self, chunk: bytes) -> None:
        """Keeps the lines `status` shows: the service's last words and its last warning."""
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        if len(self._partial) > 65_536:  # no newline in sight: not a line worth keeping
            self._partial = b""
        for line in lines:
            if line.startswith(_LAST_WORDS):
                self.last_words = line[len(_LAST_WORDS):].decode("utf-8", "replace").strip()
            elif line.startswith(_WARNINGS):
                self.last_warning = line.decode("utf-8", "replace").strip()

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
        self.sample_usage()  # memory at once; CPU from the supervisor's next sample on
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

    def sample_usage(self) -> None:
        """Reads the CPU and memory of the service's process tree (the supervisor calls it every second)."""
        self.usage.sample(self.pid)

    def status(self, usage: bool = True) -> dict[str, Any]:
        """The service's state, with the last sample of its CPU % and RSS when `usage` is asked for."""
        now = time.monotonic()
        cpu, rss = (self.usage.cpu_percent, self.usage.rss_bytes) if usage and self.pid else (None, None)
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
            "lastWarning": self.last_warning,
            "cpuPercent": cpu,
            "rssBytes": rss,
            "startupSeconds": self.healthy_at - self.started_at if self.healthy_at and self.started_at else None,
        }


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass
