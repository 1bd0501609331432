"""One supervised replica: spawn, probes, restarts, stop; its output to its log.

    process = ManagedProcess(spec, spec.replicas[0], paths)
    process.start(spec, replica, handed)   # runs until stopped, restarting as its policy says
    await process.stop()                   # SIGTERM to its process group, SIGKILL after the grace period
    process.status()                       # state, pid, restarts, health, readiness, CPU and RSS of its tree

Each replica runs its spec's command line (a built-in service is `python -m
tooloo_cli.services NAME`) in a session of its own, so a signal reaches its whole group, and
dies with the supervisor (PR_SET_PDEATHSIG, see tooloo_cli/parent.py). Each start takes the
spec and the environment handed over by the command that asked for it (see environment.py);
restarts after a crash reuse them. A replica's first process may have been spawned by the
standby already, with the same arguments (early.py): its first start then adopts it
(adopted.py). When its exit is to be restarted, and after how long, is the restart policy's
(restart.py); the probes are the spec's (probes.py): liveness every 50 ms (and at once when
the replica writes something: a service says `listening` when it has bound its port) until
the first pass, within the startup timeout, then calmly, several failures in a row
restarting the process; readiness likewise, without restarts (a replica that is alive but
not ready is left to recover). Each change of state, health or readiness is announced
(`on_change`): the supervisor answers whoever waits on it. Before it spawns, a replica waits
on the gate it was given (its dependencies being ready), in state `waiting`.

A built-in service's last `tooloo serve:` line is the reason shown when it refuses to
start, and its last warning (a `WARNING tooloo…` line: a database moved aside, a cache on
a full disk) is kept for `tooloo status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from tooloo_cli.config import ConfigError
from tooloo_cli.ports import describe_holder, is_free, port_holder
from tooloo_cli.stack import Replica, ServiceSpec, probe_host
from tooloo_cli.supervisor.adopted import AdoptedProcess
from tooloo_cli.supervisor.early import EarlySpawn, popen_arguments, signal_group
from tooloo_cli.supervisor.environment import service_environment
from tooloo_cli.supervisor.logs import Entry, Lines, RotatingLog, encode
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.stack.probes import probe_of
from tooloo_cli.supervisor.restart import RestartTracker, describe_exit, signal_name
from tooloo_cli.supervisor.usage import TreeUsage

logger = logging.getLogger("tooloo.supervisor")

OutputSink = Callable[[str, list[Entry]], None]  # a replica's name, the entries it just logged
Gate = Callable[[], Awaitable[str | None]]  # None once it may start, else why it must not
Child = asyncio.subprocess.Process | AdoptedProcess  # spawned by the supervisor, or adopted from its standby
FIRST_PROBE_INTERVAL = 0.05
EXITS_KEPT = 5
_LAST_WORDS = b"tooloo serve: "  # how a service states why it exits
_WARNINGS = (b"WARNING tooloo", b"ERROR tooloo")  # how a service's own warnings begin (serve.LOG_FORMAT)


V = TypeVar("V")


class _Announced(Generic[V]):
    """An attribute of a ManagedProcess kept in `_NAME`, whose every change calls its `_changed()`."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, process: ManagedProcess, owner: type | None = None) -> V:
        return getattr(process, self.slot)

    def __set__(self, process: ManagedProcess, value: V) -> None:
        if value != getattr(process, self.slot):
            setattr(process, self.slot, value)
            process._changed()


# What a replica can be doing (`status()["state"]`; the supervisor's /metrics has one series for each).
STATES = ("waiting", "starting", "running", "backoff", "stopping", "stopped", "exited", "failed")

class ManagedProcess:
    def __init__(self, spec: ServiceSpec, replica: Replica, paths: StatePaths,
                 on_output: OutputSink | None = None, log_limits: tuple[int, int] = (10 * 1024 * 1024, 3),
                 on_change: Callable[[], None] | None = None) -> None:
        self.name = replica.name
        self.paths = paths
        self.spec, self.replica = spec, replica
        self.handed: dict[str, str] = {}
        self.on_output = on_output
        self.on_change = on_change  # called whenever state, health or readiness changes
        self.tracker = RestartTracker(spec.restart)
        self._state = "stopped"  # one of STATES
        self._health = "unknown"  # healthy, unhealthy, unknown
        self._ready = False
        self.probes: dict[str, dict[str, Any]] = {}  # liveness/readiness → the last result
        self.pid: int | None = None
        self.last_exit_code: int | None = None
        self.error: str | None = None
        self.last_failure: str | None = None  # kept after a stop, unlike `error`
        self.started_at: float | None = None  # monotonic, of the current process
        self.healthy_at: float | None = None
        self._wanted = False
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._process: Child | None = None
        self._early: EarlySpawn | None = None  # spawned by the standby already: its first start adopts it
        self.usage = TreeUsage()
        self.last_words: str | None = None  # the last `tooloo serve:` line of the current process
        self.last_warning: str | None = None
        self._ended_for: str | None = None  # why the supervisor ended the current process, if it did
        self._lines = {"stdout": Lines(), "stderr": Lines()}
        self.exits: deque[dict[str, Any]] = deque(maxlen=EXITS_KEPT)  # the last exits, for `tooloo status NAME`
        self.restart_at: float | None = None  # when a replica in backoff is spawned again (epoch seconds)
        self._output = asyncio.Event()  # set by each chunk of output: a hint to probe now, not in 50 ms
        self._log_failed = False
        self._log = RotatingLog(paths.log(self.name), *log_limits)  # (max bytes, backups)

    # What `tooloo up` waits on: each change is announced (on_change), so that a waiting command is
    # answered when it happens instead of polling for it.
    state = _Announced[str]()
    health = _Announced[str]()
    ready = _Announced[bool]()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def active(self) -> bool:
        """Wanted running (waiting, starting, running or waiting to restart)."""
        return self._task is not None and not self._task.done()

    @property
    def restarts(self) -> int:
        return self.tracker.restarts

    @property
    def host(self) -> str:
        return probe_host(self.spec.bind)

    @property
    def port(self) -> int | None:
        return self.replica.port

    def start(self, spec: ServiceSpec | None = None, replica: Replica | None = None,
              handed: dict[str, str] | None = None, gate: Gate | None = None, early: EarlySpawn | None = None) -> None:
        """Starts supervising, from `spec` and the `handed` environment when given (else the last ones).

        `gate` is awaited before the first spawn (the dependencies' readiness). `early` is the
        replica's process already spawned by a standby supervisor (early.py): the first start adopts it.
        """
        if self.active:
            if early is not None:  # it runs already: a second process of it must not
                early.end()
            return
        self._early = early
        if spec is not None:
            self.spec = spec
            self.replica = replica or spec.replica(self.name)
        if handed is not None:
            self.handed = dict(handed)
        self.tracker.begin(self.spec.restart)
        self._wanted = True
        self._stopping.clear()
        self.error = self.last_failure = self.last_warning = None
        self.state = "waiting" if gate is not None else "starting"  # at once: a poll must not read "stopped"
        self._task = asyncio.get_running_loop().create_task(self._run(gate), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        """Stops the replica wherever it is: waiting, starting, running or waiting to restart."""
        self._wanted = False
        self._stopping.set()  # wakes a gate or a backoff pause at once
        process = self._process
        if process is not None and process.returncode is None:
            self.state = "stopping"
            await self._terminate(process)
        if self._task is not None:
            await self._task
            self._task = None
        if self.state not in ("stopped", "failed", "exited"):  # it was running, starting or about to
            self._event("stopped" + (f" ({describe_exit(process.returncode)})" if process is not None else ""))
        self.state = "stopped"
        self.error = None
        await self._wait_port_free()

    def signal(self, signum: int) -> int | None:
        """Sends `signum` to the replica's process group (the pid signalled), or None when none runs."""
        process = self._process
        if process is None or process.returncode is not None:
            return None
        self._event(f"sent {signal_name(signum)} (tooloo kill)")
        signal_group(process.pid, signum)
        return process.pid

    async def wait_ready(self) -> str | None:
        """None once this replica is ready; why not, once it will not be (failed, exited, stopped)."""
        while not self.ready:
            if self.state == "failed":
                return f"failed: {self.error}"
            if not self.active:
                return "is not running" if self.state != "exited" else f"exited ({describe_exit(self.last_exit_code)})"
            await asyncio.sleep(FIRST_PROBE_INTERVAL)
        return None

    def close(self) -> None:
        self._log.close()

    # -- the supervision loop -----------------------------------------------------------

    async def _run(self, gate: Gate | None) -> None:
        try:
            await self._supervise(gate)
        finally:
            if self._early is not None:  # stopped, or failed, before it was adopted: nobody else will end it
                self._early.end()
                self._early = None

    async def _supervise(self, gate: Gate | None) -> None:
        if gate is not None:
            refusal = await self._unless_stopped(gate())
            if not self._wanted:
                return
            if refusal is not None:
                self._fail(f"not started: {refusal}")
                return
        while self._wanted:
            # Its port is the early process's own by now (it was found free before that was spawned).
            if self._early is None and self.port is not None \
                    and (holder := port_holder(self.host, self.port)) is not None:
                self._fail(f"port {self.port} is taken by {describe_holder(holder)}")
                return
            try:
                environment = service_environment(self.spec, os.environ, self.handed)
            except ConfigError as exc:  # its env_file went missing since the command checked it
                self._fail(str(exc))
                return
            try:
                code = await self._run_once(environment)
            except OSError as exc:  # a command of the user's own that cannot be run: no retry will change that
                self._fail(f"cannot run {self.spec.argv(self.replica)[0]} in {self.spec.cwd}: {exc.strerror or exc}")
                return
            self._exited(code)
            if not self._wanted:
                return
            ended = self._ended_for  # the supervisor ended it (its probes failed): a failure, whatever the code
            verdict = self.tracker.exited(code, self.last_words if self.spec.builtin else None, ended is not None)
            how = f"was ended ({ended})" if ended else f"exited ({describe_exit(code)})"
            if verdict.failure is not None:
                self._fail(verdict.failure, f"{how}; ")
                return
            if not verdict.restart:
                self.state = "exited"
                self._wanted = False
                self._event(f"{how}; its restart policy is {self.spec.restart.restart!r}, so it stays stopped")
                return
            self.state = "backoff"
            self.restart_at = time.time() + verdict.delay
            self._event(f"{how}; restarting in {verdict.delay:g} s (restart {self.restarts})")
            await self._unless_stopped(asyncio.sleep(verdict.delay))
            self.restart_at = None

    async def _unless_stopped(self, waited: Awaitable[Any]) -> Any:
        """What `waited` gives, or None as soon as a stop comes in meanwhile."""
        task = asyncio.ensure_future(waited)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return None
        return task.result()

    async def _run_once(self, environment: dict[str, str]) -> int | None:
        """Spawns the replica and returns its exit code once it has exited, whatever happened meanwhile.

        OSError when its command cannot be run at all (no such program, no such directory).
        """
        early, self._early = self._early, None
        process = await self._spawn(environment) if early is None else await self._adopt(early)
        if not self._wanted:  # stopped while it was being spawned: nobody else will end it
            await self._terminate(process)
        loop = asyncio.get_running_loop()
        probes = loop.create_task(self._watch(process))
        pump = loop.create_task(self._pump(process))
        try:
            return await process.wait()
        finally:
            probes.cancel()
            await asyncio.gather(pump, probes, return_exceptions=True)
            signal_group(process.pid, signal.SIGKILL)  # whatever it left behind in its group
            self.last_exit_code = process.returncode
            self._process = None
            self.pid = None
            self.health = "unknown"
            self.ready = False

    def _fail(self, reason: str, how: str = "") -> None:
        self.state = "failed"
        self.error = self.last_failure = reason
        self._wanted = False
        self._event(f"{how}failed: {reason}")

    def _exited(self, code: int | None) -> None:
        """Keeps an exit for `tooloo status NAME`: when, its code or the signal that ended it."""
        self.exits.append({"at": time.time(), "exitCode": code if code is None or code >= 0 else None,
                           "signal": signal_name(-code) if code is not None and code < 0 else None,
                           "endedFor": self._ended_for, "expected": not self._wanted})  # asked for (a stop)

    async def _spawn(self, environment: dict[str, str]) -> asyncio.subprocess.Process:
        self._starting()
        process = await asyncio.create_subprocess_exec(
            *self.spec.argv(self.replica),
            **popen_arguments(self.spec.cwd, environment, self.spec.builtin, os.getpid()))
        self._started(process, time.monotonic())
        return process

    async def _adopt(self, early: EarlySpawn) -> AdoptedProcess:
        """Takes over the process a standby spawned for this replica before the supervisor ran."""
        self._starting()
        try:
            process = await AdoptedProcess.of(early)
        except BaseException:
            early.end()
            raise
        self._started(process, early.started_at)
        return process

    def _starting(self) -> None:
        self.state = "starting"
        self.healthy_at = None
        self.last_words = None
        self._ended_for = None
        self.tracker.spawned()

    def _started(self, process: Child, started_at: float) -> None:
        self._process = process
        self.pid = process.pid
        self.started_at = started_at
        self._event(f"started (pid {process.pid}" + (f", restart {self.restarts})" if self.restarts else ")"))

    async def _pump(self, process: Child) -> None:
        assert process.stdout is not None and process.stderr is not None
        await asyncio.gather(self._drain("stdout", process.stdout), self._drain("stderr", process.stderr))

    async def _drain(self, stream: str, reader: asyncio.StreamReader) -> None:
        lines = self._lines[stream]
        while chunk := await reader.read(65_536):
            self._take(stream, lines.feed(chunk))
            self._output.set()
        self._take(stream, lines.rest())

    def _take(self, stream: str, lines: list[bytes]) -> None:
        """Lines the replica wrote: noted for `status` (its last words, its last warning), then logged."""
        for line in lines:
            if line.startswith(_LAST_WORDS):
                self.last_words = line[len(_LAST_WORDS):].decode("utf-8", "replace").strip()
            elif line.startswith(_WARNINGS):
                self.last_warning = line.decode("utf-8", "replace").strip()
        self._record(stream, lines)

    def _event(self, what: str) -> None:
        """One of the supervisor's events for this replica (started, exited, restarting, failed,
        stopped), in the replica's own log: `tooloo logs` shows a kill -9 and its restart."""
        self._record("supervisor", [what.encode()])

    def _record(self, stream: str, lines: list[bytes]) -> None:
        """To the log file and the output sink, stamped now; a failure of either is reported once and
        the pipes keep being drained, so the service never blocks on a full pipe."""
        if not lines:
            return
        at = time.time()
        try:
            self._log.write(encode(at, stream, lines))
            self._log_failed = False
        except OSError as exc:
            if not self._log_failed:
                logger.error("%s: cannot write its log %s: %s", self.name, self._log.path, exc)
            self._log_failed = True
        if self.on_output is not None:
            try:
                self.on_output(self.name, [Entry(at, stream, line.decode("utf-8", "replace")) for line in lines])
            except Exception as exc:  # a closed terminal, say: the service itself must not suffer
                logger.error("%s: output stopped: %s", self.name, exc)
                self.on_output = None

    async def _probe(self, which: str, process: Child) -> str | None:
        """Asks the liveness or readiness probe once, and keeps what it said for `status`."""
        probe = self.spec.liveness if which == "liveness" else self.spec.readiness
        started = time.perf_counter()
        reason, degraded = await probe_of(probe, self.host, self.port) if process.returncode is None \
            else ("the process exited", None)
        self.probes[which] = {"probe": probe.describe(), "ok": reason is None, "reason": reason,
                              "degraded": degraded,
                              "latencyMs": round((time.perf_counter() - started) * 1000, 2), "at": time.time()}
        return reason

    async def _watch(self, process: Child) -> None:
        """Fast probes until alive and ready (within the startup timeout), then calm ones."""
        deadline = time.monotonic() + self.spec.startup_timeout
        while await self._probe("liveness", process) is not None:
            if time.monotonic() > deadline:
                await self._end(process, f"not alive after {self.spec.startup_timeout:g} s "
                                         f"({self.probes['liveness']['reason']})")
                return
            await self._pause_or_output(FIRST_PROBE_INTERVAL)
        self.health = "healthy"
        self.healthy_at = time.monotonic()
        self.tracker.healthy()
        self.sample_usage()  # memory at once; CPU from the supervisor's next sample on
        if self.state == "starting":
            self.state = "running"
        while not self.ready and time.monotonic() <= deadline:
            self.ready = await self._probe("readiness", process) is None
            if not self.ready:
                await self._pause_or_output(FIRST_PROBE_INTERVAL)
        if self.ready:
            self._event(f"ready in {time.monotonic() - (self.started_at or 0):.2f} s")
        else:  # left to recover, probed calmly below (liveness too: a hang is still ended)
            self._event(f"alive but not ready after {self.spec.startup_timeout:g} s "
                        f"({self.probes['readiness']['reason']})")
        misses = 0
        while True:
            await asyncio.sleep(self.spec.probe_interval)
            if await self._probe("liveness", process) is None:
                if misses:
                    self._event(f"liveness probe passes again, after {misses} failed")
                misses = 0
                self.health = "healthy"
                was_ready, self.ready = self.ready, await self._probe("readiness", process) is None
                if self.ready != was_ready:  # a change after start-up is news too: the log says when
                    self._event("ready" if self.ready else f"not ready: {self.probes['readiness']['reason']}")
                continue
            misses += 1
            self.health = "unhealthy"
            self._event(f"liveness probe failed ({misses} of {self.spec.liveness_failures}): "
                        f"{self.probes['liveness']['reason']}")
            self.ready = False
            if misses >= self.spec.liveness_failures:
                await self._end(process, f"failed {misses} liveness probes ({self.probes['liveness']['reason']})")
                return

    async def _pause_or_output(self, seconds: float) -> None:
        """Waits `seconds`, or less if the process writes something first.

        A service says `listening` the moment its socket is bound: probed then, it is found
        alive as soon as it answers, not up to an interval later (the probe's connection
        waits in the backlog until the service serves). Output arriving faster than probes
        can be answered costs no more than the probes themselves: each waits for its answer.
        """
        self._output.clear()
        try:
            async with asyncio.timeout(seconds):  # not wait_for, which can lose the probe loop's cancellation
                await self._output.wait()
        except TimeoutError:
            pass

    async def _end(self, process: Child, reason: str) -> None:
        """Ends a process whose probes failed; its restart policy then decides what comes next."""
        self._ended_for = reason
        self._event(f"{reason}; ending it")
        await self._terminate(process)

    async def _terminate(self, process: Child) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period; returns once it has exited."""
        group = process.pid  # a session leader: its pid is its group's id
        signal_group(group, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.spec.grace_period):
                await asyncio.shield(process.wait())
        except TimeoutError:
            signal_group(group, signal.SIGKILL)
            await process.wait()

    async def _wait_port_free(self, timeout: float = 2.0) -> None:
        if self.port is None:
            return
        deadline = time.monotonic() + timeout
        while not is_free(self.host, self.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- what status shows ----------------------------------------------------------------

    def sample_usage(self) -> None:
        """Reads the CPU and memory of the replica's process tree (the supervisor calls it every second)."""
        self.usage.sample(self.pid)

    def status(self, usage: bool = True) -> dict[str, Any]:
        """The replica's state, with the last sample of its CPU % and RSS when `usage` is asked for."""
        now = time.monotonic()
        cpu, rss = (self.usage.cpu_percent, self.usage.rss_bytes) if usage and self.pid else (None, None)
        return {
            "name": self.name,
            "service": self.spec.name,
            "replica": self.replica.index,
            "state": self.state,
            "health": self.health,
            "ready": self.ready,
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
            "observable": self.spec.builtin,
            "probes": self.probes,
            "command": list(self.spec.argv(self.replica)),
            "exits": list(self.exits),
            "restartAt": self.restart_at,
        }
