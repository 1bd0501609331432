"""The supervisor: the services' replicas and the control API over them.

    supervisor = Supervisor(load_config(), handed=handover(loaded, os.environ)["environment"])
    asyncio.run(supervisor.run(["web", "budget"]))     # until `down` leaves nothing, or SIGTERM

What runs is the stack model's (`tooloo_cli.stack`): one ManagedProcess per replica of
each ServiceSpec. Services start in dependency order: each waits, in state `waiting`,
until every replica of what it `depends_on` is ready (a dependency that fails fails it,
saying so), and whatever a started service depends on is started with it, as docker
compose does. Stops go the other way: dependents first, then what they depend on.
Names in the API are service names (all their replicas) or replica names (`budget.2`).

It runs detached (`tooloo up` launches `python -m tooloo_cli.supervisor`) or attached
(`tooloo up --foreground`, where `on_output` prints each service's lines). Either way it
owns `.tooloo/supervisor.pid` and `.tooloo/supervisor.sock`, and removes both on its way out.
It samples the CPU and memory of every service's process tree each second.

Control API (JSON):
    GET  /status                         the supervisor and every replica, with CPU and memory
    GET  /states                         every replica's state only (cheap), and its `version`
    GET  /states?after=V&wait=S          the same, once the version has passed V (at most S seconds
                                         later, S ≤ 30): a command waiting on a start is answered when
                                         a state, health or readiness changes, without polling
         [&settled=a,b]                  ...and those replicas are all ready, or one failed or stopped
                                         (held while the supervisor stops as well; answered at once
                                         when it has stopped everything and is leaving)
    POST /start    {"services": [...], "config"?, "environment"?}   starts those not running
    POST /stop     {"services": [...], "keepSupervisor"?}   stops them (all when omitted); exits when
                                         none is left, unless keepSupervisor is true (`tooloo stop`)
    POST /restart  {"services": [...], "config"?, "environment"?}

With [supervisor] metrics_port set, it also serves GET /metrics (Prometheus: supervisor/metrics.py)
on that port of 127.0.0.1.

A start or restart that brings "config" (a file's path, or null for the defaults) and
"environment" (the command's TOOLOO_* settings and secrets: see environment.py) reads the
configuration afresh, and the services it starts run on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tooloo_cli.config import ConfigError, LoadedConfig, load_config
from tooloo_cli.errors import ToolooError, UsageError
from tooloo_cli.exposition import CONTENT_TYPE
from tooloo_cli.stack import METRICS_PATH, SUPERVISOR_METRICS_HOST, ServiceSpec, Stack, stack_of
from tooloo_cli.supervisor.api import ControlServer, Text
from tooloo_cli.supervisor.environment import scrubbed
from tooloo_cli.supervisor.early import EarlySpawn, end_unclaimed
from tooloo_cli.supervisor.lock import FileLock
from tooloo_cli.supervisor.metrics import metrics_page
from tooloo_cli.supervisor.paths import StatePaths, write_private
from tooloo_cli.supervisor.registry import sign_in, sign_out, still_signed_in
from tooloo_cli.supervisor.process import Gate, ManagedProcess, OutputSink
from tooloo_cli.supervisor.usage import USAGE_INTERVAL, own_rss

logger = logging.getLogger("tooloo.supervisor")

MAX_STATES_WAIT = 30.0  # seconds a GET /states may be held open waiting for a change


class Supervisor:
    def __init__(self, loaded: LoadedConfig, on_output: OutputSink | None = None, detached: bool = True,
                 handed: dict[str, str] | None = None, early: dict[str, EarlySpawn] | None = None) -> None:
        self.loaded = loaded
        # Replicas its standby spawned already (early.py): each adopted by its first start, the rest ended.
        self.early = early if early is not None else {}
        self.stack = stack_of(loaded)
        self.handed = dict(handed or {})  # the launching command's settings and secrets
        self.paths = StatePaths.of(loaded)
        self.paths.ensure()
        self.detached = detached
        self.on_output = on_output
        self.processes: dict[str, ManagedProcess] = {}
        self.version = 0  # of the replicas' states: one more at every change (see /states)
        self._change = asyncio.Event()  # set, and replaced, at every change
        self._adopt(self.stack)
        self.started = time.monotonic()
        self._done = asyncio.Event()  # set when it is to stop: it then stops every replica, and leaves
        self.interrupted = False  # stopped by SIGINT (Ctrl-C): an attached `up` then exits 130
        self._final = False  # every replica stopped, the control socket about to close: GET /states waits no more
        self._leaving = False  # a stop of everything is under way: the supervisor leaves once it is done
        self._signed_in: Path | None = None  # its entry in the registry of running stacks (registry.py)
        self._lock = FileLock(self.paths.supervisor_lock)
        self._control = ControlServer(self.paths.socket, {
            ("GET", "/status"): self._status,
            ("GET", "/states"): self._states,
            ("POST", "/start"): self._start,
            ("POST", "/stop"): self._stop,
            ("POST", "/restart"): self._restart,
            ("POST", "/kill"): self._kill,
        })
        self._metrics_port = loaded.config.supervisor.metrics_port  # what the configuration asks (0: none)
        self._launching = asyncio.Lock()
        self._metrics = self._metrics_server(self._metrics_port)

    async def run(self, names: list[str], on_ready: Callable[[], None] | None = None) -> None:
        """Supervises `names` until SIGTERM/SIGINT (SIGHUP too, when attached) or until `down` leaves nothing.

        `on_ready` is called once the control socket answers and `names` are being started.
        """
        # The lock comes before the pid file and the socket: a second supervisor for the same
        # state directory stops here, touching nothing of the first one's.
        if not self._lock.acquire(blocking=False):
            raise ToolooError(f"a supervisor already runs for {self.paths.root}")
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._done.set)
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        # Detached, a closed terminal is no reason to stop; attached, it is the user leaving.
        loop.add_signal_handler(signal.SIGHUP, (lambda: None) if self.detached else self._done.set)
        write_private(self.paths.pid_file, f"{os.getpid()}\n")
        sampler = loop.create_task(self._sample_usage(), name="usage-sampler")
        try:
            # Started before the socket answers: a command let in once it does finds them starting, never
            # its standby's early replicas (early.py) still waiting to be adopted or ended.
            self._start_replicas(self._resolve(names), self.stack, self.handed)
            end_unclaimed(self.early)
            await self._control.start()
            self._signed_in = sign_in(self.paths, self.loaded.source)  # for `tooloo ls`, once it answers
            await self._serve_metrics()
            if on_ready is not None:
                on_ready()
            await self._done.wait()
        finally:
            sampler.cancel()
            await self._stop_in_order(list(self.processes))
            self._final = True
            self._changed()  # whoever still waits in GET /states gets these last states, before the socket closes
            await self._control.close()
            if self._metrics is not None:
                await self._metrics.close()
            for process in self.processes.values():
                process.close()
            sign_out(self._signed_in)
            self.paths.pid_file.unlink(missing_ok=True)
            self._lock.release()

    async def _serve_metrics(self) -> None:
        """Listens on [supervisor] metrics_port, if set. A port that cannot be had is logged, not fatal: the
        stack matters more than its metrics (the log says what to change)."""
        if self._metrics is None:
            return
        try:
            await self._metrics.start()
        except OSError as exc:
            logger.error("cannot serve /metrics on 127.0.0.1:%s (%s); set [supervisor] metrics_port to a free "
                         "port, or 0 for none", self.loaded.config.supervisor.metrics_port, exc.strerror or exc)
            self._metrics, self._metrics_port = None, 0  # not served: the next `up` tries again

    def _metrics_server(self, port: int) -> ControlServer | None:
        # Loopback only, whatever stack.host says: what it tells (pids' usage, states) is the operator's.
        return ControlServer((SUPERVISOR_METRICS_HOST, port), {("GET", METRICS_PATH): self._page}) if port else None

    async def _move_metrics(self, port: int) -> None:
        """A configuration read afresh (`up`, `restart`) that moves [supervisor] metrics_port moves the
        listener: the new port is taken before the old one is let go, and one that cannot be taken is
        refused (UsageError) with the old listener kept, so the command says so and nothing changes."""
        if port == self._metrics_port:
            return
        moved = self._metrics_server(port)
        if moved is not None:
            try:
                await moved.start()
            except OSError as exc:
                raise UsageError(f"[supervisor] metrics_port {port} cannot be served on {SUPERVISOR_METRICS_HOST} "
                                 f"({exc.strerror or exc}); choose a free port, or 0 for none. Nothing was "
                                 "changed") from None
        # Swapped before the old one's close is awaited (a scrape in flight holds it up to a second): a start
        # that comes meanwhile finds the new listener, and the old one is closed once, by this start.
        old, self._metrics, self._metrics_port = self._metrics, moved, port
        if old is not None:
            await old.close()

    async def _page(self, payload: dict[str, Any]) -> tuple[int, Text]:
        return 200, Text(metrics_page(self.processes.values()), CONTENT_TYPE)

    def _interrupt(self) -> None:
        self.interrupted = True
        self._done.set()

    def _changed(self) -> None:
        """A replica's state, health or readiness changed: wakes whoever waits in GET /states."""
        self.version += 1
        self._change.set()
        self._change = asyncio.Event()

    async def _sample_usage(self) -> None:
        while True:
            for process in self.processes.values():
                if process.pid is not None or process.usage.rss_bytes is not None:
                    process.sample_usage()
            if self._signed_in is not None:  # its entry removed meanwhile (the registry cleared): again
                self._signed_in = still_signed_in(self._signed_in, self.paths, self.loaded.source)
            await asyncio.sleep(USAGE_INTERVAL)

    def _adopt(self, stack: Stack) -> None:
        """A ManagedProcess for every replica of `stack` (new ones for replicas it did not have)."""
        limits = (self.loaded.config.supervisor.log_max_bytes, self.loaded.config.supervisor.log_backups)
        for spec in stack.specs.values():
            for replica in spec.replicas:
                if replica.name not in self.processes:
                    self.processes[replica.name] = ManagedProcess(spec, replica, self.paths, self.on_output, limits,
                                                                  on_change=self._changed)
        # A replica the configuration no longer has is forgotten once it is not running.
        wanted = {replica.name for replica in stack.replicas()}
        for name in [name for name, process in self.processes.items()
                     if name not in wanted and not process.active and process.pid is None]:
            self.processes.pop(name).close()
        order = {name: index for index, name in enumerate(replica.name for replica in stack.replicas())}
        self.processes = dict(sorted(self.processes.items(), key=lambda item: order.get(item[0], len(order))))

    async def _launch(self, payload: dict[str, Any]) -> tuple[Stack, dict[str, str], list[str]]:
        """The stack, environment and names a start asks for: the configuration read afresh when it brings
        one, and the names checked against it before anything changes (UsageError)."""
        if "environment" not in payload:
            return self.stack, self.handed, self._names(payload)
        config, handed = payload.get("config"), payload["environment"]
        if (config is not None and not isinstance(config, str)) or not isinstance(handed, dict) \
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in handed.items()):
            raise UsageError("config must be a path or null, environment an object of strings")
        try:
            loaded = load_config(config, env={**scrubbed(os.environ, self.loaded), **handed},
                                 cwd=self.loaded.base_dir)
            stack = stack_of(loaded)
        except ConfigError as exc:
            raise UsageError(f"the configuration cannot be used: {exc}") from None
        if loaded.state_path() != self.paths.root:
            raise UsageError(f"that configuration keeps its state in {loaded.state_path()}, "
                             f"not in this supervisor's {self.paths.root}")
        names = self._names(payload, stack)
        async with self._launching:  # two starts at once: one configuration after the other, never mixed
            await self._move_metrics(loaded.config.supervisor.metrics_port)
            self.loaded, self.stack, self.handed = loaded, stack, dict(handed)
        self._adopt(stack)
        return stack, self.handed, names

    def _resolve(self, names: list[str]) -> list[str]:
        """Replica names for service or replica `names` (every replica when empty)."""
        if not names:
            return list(self.processes)
        resolved: list[str] = []
        for name in names:
            # A service means its replicas now, and any it had before a change of `replicas` still runs.
            resolved += [n for n, process in self.processes.items() if process.spec.name == name] or [name]
        return list(dict.fromkeys(resolved))

    def _names(self, payload: dict[str, Any], stack: Stack | None = None) -> list[str]:
        """The service or replica names asked for, each known to `stack` (the supervisor's own by default)
        or running; UsageError otherwise."""
        names = payload.get("services") or []
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise UsageError("services must be a list of service names")
        specs = (stack or self.stack).specs
        unknown = [name for name in names if name not in specs and name not in self.processes]
        if unknown:
            raise UsageError(f"unknown service(s): {', '.join(unknown)}")
        return names

    def _start_replicas(self, replicas: list[str], stack: Stack, handed: dict[str, str]) -> list[str]:
        """Starts `replicas` and every replica their services depend on; the ones it started."""
        asked_services = list(dict.fromkeys(self.processes[name].spec.name for name in replicas))
        services = stack.with_dependencies(asked_services)
        chosen = set(replicas)
        started = []
        for service in services:
            spec = stack.specs[service]
            for replica in spec.replicas:
                process = self.processes[replica.name]
                # Of a service asked for, the replicas asked for; of a dependency, every replica.
                if process.active or (service in asked_services and replica.name not in chosen):
                    continue
                if spec.depends_on:
                    process.start(spec, replica, handed, self._gate(spec, stack))
                else:
                    process.start(spec, replica, handed, early=self.early.pop(replica.name, None))
                started.append(replica.name)
        return started

    def _gate(self, spec: ServiceSpec, stack: Stack) -> Gate:
        """Waits until every replica of each of `spec`'s dependencies in `stack` (the one it was started
        from) is ready; why not, if one will not be."""
        async def dependencies_ready() -> str | None:
            for dependency in spec.depends_on:
                for replica in stack.specs[dependency].replicas:
                    reason = await self.processes[replica.name].wait_ready()
                    if reason is not None:
                        return f"its dependency {replica.name} {reason}"
            return None

        return dependencies_ready

    async def _stop_in_order(self, replicas: list[str]) -> None:
        """Stops `replicas`: dependents first, then what they depend on, each wave at once."""
        by_service: dict[str, list[str]] = {}
        for name in replicas:
            by_service.setdefault(self.processes[name].spec.name, []).append(name)
        known = [service for service in by_service if service in self.stack.specs]
        waves = self.stack.stop_waves(known) + [[service for service in by_service if service not in known]]
        for wave in waves:
            names = [name for service in wave for name in by_service[service]]
            outcomes = await asyncio.gather(*(self.processes[name].stop() for name in names), return_exceptions=True)
            for name, outcome in zip(names, outcomes):
                if isinstance(outcome, BaseException):
                    logger.error("stopping %s failed: %r", name, outcome)

    # -- the control API ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "ok": True,
            "supervisor": {"pid": os.getpid(), "uptime": time.monotonic() - self.started,
                           "rssBytes": own_rss(), "socket": str(self.paths.socket),
                           "config": str(self.loaded.source) if self.loaded.source else None},
            "services": {name: process.status() for name, process in self.processes.items()},
        }

    async def _status(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 200, self.status()

    async def _states(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """States without CPU and memory; with `after` (a version) and `wait` (seconds), held until the
        version has passed `after` or the wait is over, whichever comes first. With `settled` too (replica
        names, comma-separated), held until those have settled: each ready, or one failed, exited or
        stopped (what `tooloo up` waits for, when it has no progress to draw: one answer, not one a change).
        """
        if "after" in payload:
            try:
                after, wait = int(payload["after"]), float(payload.get("wait", 0))
            except (TypeError, ValueError):
                raise UsageError("after must be a whole number and wait a number of seconds") from None
            if not 0 <= wait <= MAX_STATES_WAIT:
                raise UsageError(f"wait must be between 0 and {MAX_STATES_WAIT:g} seconds")
            settled = [name for name in str(payload.get("settled", "")).split(",") if name]
            deadline = asyncio.get_running_loop().time() + wait
            # Held while the supervisor stops too: the replicas' stopping and stopped are changes like any,
            # and answered at once meanwhile, a caller waiting for a change would ask again and again.
            while not self._final and (self.version <= after or not self._settled(settled)):
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._change.wait(), left)
                except asyncio.TimeoutError:
                    break
        return 200, {"ok": True, "version": self.version,
                     "services": {name: p.status(usage=False) for name, p in self.processes.items()}}

    def _settled(self, names: list[str]) -> bool:
        """Whether each of `names` is alive and ready, or one of them has failed, exited or stopped
        (an unknown name counts as settled: the asker will find it missing)."""
        processes = [self.processes.get(name) for name in names]
        if any(process is None or process.state in ("failed", "exited", "stopped") for process in processes):
            return True
        return all(process.state == "running" and process.health == "healthy" and process.ready
                   for process in processes if process is not None)

    def _refuse_while_leaving(self) -> tuple[int, dict[str, Any]] | None:
        if self._done.is_set() or self._leaving:
            return 503, {"ok": False, "error": "the supervisor is shutting down"}
        return None

    async def _start(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if refusal := self._refuse_while_leaving():
            return refusal
        stack, handed, names = await self._launch(payload)
        asked = self._resolve(names)
        started = self._start_replicas(asked, stack, handed)
        return 200, {"ok": True, "started": started, "alreadyRunning": [n for n in asked if n not in started]}

    async def _stop(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        names = self._resolve(self._names(payload))
        keep = payload.get("keepSupervisor", False)
        if not isinstance(keep, bool):
            raise UsageError("keepSupervisor must be true or false")
        # A failed or exited replica is stopped too: `down` leaves it `stopped`, as users of pm2 expect.
        running = [name for name in names if self.processes[name].pid is not None or self.processes[name].active
                   or self.processes[name].state in ("failed", "exited")]
        # Whether the supervisor leaves is decided before anything stops, and said at once: a start that
        # comes in meanwhile is refused, where it would have made a replica active again and kept a
        # supervisor running after a full `down`.
        leaves = not keep and {name for name, process in self.processes.items() if process.active} <= set(running)
        self._leaving = self._leaving or leaves
        try:
            await self._stop_in_order(running)
        finally:
            # Left, too, when what it did not stop ended meanwhile (it failed, or exited for good), and
            # when the stop itself failed: a supervisor marked as leaving must not stay, refusing starts.
            leaves = leaves or (not keep and not any(process.active for process in self.processes.values()))
            if leaves:  # the supervisor then shuts down; its control server lets this answer finish first
                asyncio.get_running_loop().call_soon(self._done.set)
        return 200, {"ok": True, "stopped": running, "notRunning": [n for n in names if n not in running],
                     "supervisorExits": leaves}

    async def _kill(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Sends `signal` (a number) to each named replica's process group; what follows an exit is its
        restart policy's, as after any other exit (`tooloo stop` is the way to keep it stopped)."""
        if refusal := self._refuse_while_leaving():  # what it would signal is being stopped already
            return refusal
        names = self._resolve(self._names(payload))
        signum = payload.get("signal")
        if not isinstance(signum, int) or isinstance(signum, bool) or signum not in signal.valid_signals() \
                or signum == 0:
            raise UsageError("signal must be the number of a signal (as `kill -l` lists them)")
        sent = {name: self.processes[name].signal(signum) for name in names}
        return 200, {"ok": True, "signalled": {name: pid for name, pid in sent.items() if pid is not None},
                     "notRunning": [name for name, pid in sent.items() if pid is None]}

    async def _restart(self, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if refusal := self._refuse_while_leaving():
            return refusal
        stack, handed, names = await self._launch(payload)  # before anything stops: a bad configuration changes nothing
        asked = self._resolve(names)
        await self._stop_in_order(asked)
        self._adopt(stack)  # forgets the replicas the configuration no longer has, now stopped
        asked = [name for name in asked if name in self.processes]
        self._start_replicas(asked, stack, handed)
        return 200, {"ok": True, "restarted": asked}
