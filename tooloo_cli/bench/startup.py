"""`tooloo bench startup`: how fast the supervisor brings the stack up and down, what it leaves, and
how it compares with honcho running the same eight commands.

    result = run_startup_benchmarks(rounds=3)
    result.figures["upSeconds"], result.figures["upVsHoncho"], result.services["budget"], result.missing

Each round runs the real commands (`tooloo up`, `tooloo status`, a one-shot `tooloo
observe`, `tooloo down`) as subprocesses against a private configuration on free ports.
Per service it reports when it was healthy, counted from the moment `tooloo up` was
started (a critical-chain view: launch of the supervisor, spawn, first healthy probe).
While `tooloo down` runs, the replicas' ports are watched, so the round also says when
they were free. Orphans are processes still alive after `down` whose command line names
that private configuration.

The honcho comparison runs, in turn with each round (tooloo, honcho, tooloo, ...), the
commands the supervisor would run, from the same stack model: a Procfile line per
replica, `ServiceSpec.argv(replica)` in its spec's directory, with exactly the
environment the supervisor would give it (`service_environment`, behind `env -i`). It is
timed the same way: from `honcho start` until every replica passes the liveness and then
the readiness probe, asked as the supervisor asks them (`stack.probes.check`, every
50 ms and at once when the replica writes a line),
and from SIGTERM to honcho until every port is free and until honcho has exited (every
process gone, which is what `tooloo down` waits for before it returns). The ratios are
the medians of the rounds' ratios; below 1.0 tooloo is the faster. `down` is held to
honcho's stop as a whole (`downVsHoncho`: every process gone, what each promises); the
ports alone (`portsFreeVsHoncho`) are shown without a target: they are free ~0.1 s after
the SIGTERM either way (uvicorn looks at its exit flag every 0.1 s), and honcho gets its
signal at once where `tooloo down` is a command that starts and reads its configuration
first (~60 ms). Without honcho ≥ 2
(`pip install 'tooloo[bench]'`), or if it cannot run the stack, those figures are missing,
with the reason, and the rest is measured as ever. Every process it starts is stopped by
its pid, whatever happens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooloo_cli.bench.stack import clean_env, write_ephemeral_config

TARGETS = {"upSeconds": 1.2, "downSeconds": 0.5, "orphans": 0, "statusSeconds": 0.15, "observeSeconds": 0.25,
           "versionSeconds": 0.06, "supervisorRssMb": 30.0, "upVsHoncho": 1.0, "downVsHoncho": 1.0}
HONCHO_FIGURES = ("honchoUpSeconds", "honchoDownSeconds", "honchoPortsFreeSeconds", "upVsHoncho", "downVsHoncho",
                  "portsFreeVsHoncho")
PORT_POLL = 0.005  # how often the ports are looked at while the stack stops
SETTLE = 0.5  # seconds honcho's stack runs before it is stopped (tooloo's runs status and observe meanwhile)
COMMAND_TIMEOUT = 120.0


@dataclass
class StartupResults:
    figures: dict[str, float] = field(default_factory=dict)
    services: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> spawned, healthy (s after up)
    missing: dict[str, str] = field(default_factory=dict)  # figure -> why it could not be measured

    def to_dict(self) -> dict[str, Any]:
        return {"suite": "startup", "figures": self.figures, "services": self.services, "targets": TARGETS,
                "missing": self.missing}


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT)
    return time.perf_counter() - started, result


def _orphans(config: Path) -> int:
    import psutil

    count = 0
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if str(config) in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE and process.pid != os.getpid():
            count += 1
    return count


def _ports(config: Path, env: dict[str, str]) -> list[tuple[str, int]]:
    """Where the stack's replicas listen (the addresses their probes dial)."""
    from tooloo_cli.config import load_config
    from tooloo_cli.stack import probe_host, stack_of

    stack = stack_of(load_config(config, env=env))
    return [(probe_host(stack.specs[replica.service].bind), replica.port) for replica in stack.replicas()
            if replica.port is not None]


def _all_free(ports: list[tuple[str, int]]) -> bool:
    from tooloo_cli.ports import is_free

    return all(is_free(host, port) for host, port in ports)


def _timed_stop(command: list[str], env: dict[str, str], ports: list[tuple[str, int]]) -> tuple[float, float]:
    """`tooloo down`, watched: (seconds until its ports were free, seconds until it returned)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        freed = None
        while process.poll() is None:
            if freed is None and _all_free(ports):
                freed = time.perf_counter() - started
            time.sleep(PORT_POLL)
        returned = time.perf_counter() - started
        if process.returncode != 0:
            raise RuntimeError(f"tooloo down failed:\n{process.stderr.read() if process.stderr else ''}")
        return (freed if freed is not None else returned), returned
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def run_startup_benchmarks(rounds: int = 3) -> StartupResults:
    env = clean_env(NO_COLOR="1")
    tooloo = [sys.executable, "-m", "tooloo_cli"]
    ups, downs, freed, orphans, rss, statuses, observes = [], [], [], [], [], [], []
    honcho_rounds: list[tuple[float, float, float]] = []  # (up, ports free, exited)
    per_service: dict[str, dict[str, list[float]]] = {}
    results = StartupResults()
    with tempfile.TemporaryDirectory(prefix="tooloo-bench-startup-") as tmp:
        config = write_ephemeral_config(Path(tmp))
        command = [*tooloo, "--config", str(config)]
        ports = _ports(config, env)
        honcho = Honcho.prepare(Path(tmp), config, env)
        if isinstance(honcho, str):
            results.missing.update({figure: honcho for figure in HONCHO_FIGURES})
        try:
            for _ in range(rounds):
                up_started = time.perf_counter()
                up_seconds, up = _timed([*command, "up"], env)
                if up.returncode != 0:
                    raise RuntimeError(f"tooloo up failed:\n{up.stdout}{up.stderr}")
                status_seconds, _ = _timed([*command, "status"], env)  # the table, as a person runs it
                statuses.append(status_seconds)
                _, status = _timed([*command, "status", "--json"], env)
                document = json.loads(status.stdout)
                # The uptimes were read at the end of `status` (after its start-up), so the chain
                # is anchored where `status` finished, not where it began.
                _record_chain(document, time.perf_counter() - up_started, per_service)
                rss.append(document["supervisor"]["rssBytes"] / 1024 / 1024)
                observe_seconds, observed = _timed([*command, "observe"], env)  # one shot, the stack up
                if observed.returncode != 0:
                    raise RuntimeError(f"tooloo observe failed with the stack up:\n{observed.stdout}{observed.stderr}")
                observes.append(observe_seconds)
                ups.append(up_seconds)
                ports_free, down_seconds = _timed_stop([*command, "down"], env, ports)
                freed.append(ports_free)
                downs.append(down_seconds)
                orphans.append(_orphans(config))
                if isinstance(honcho, Honcho) and not results.missing:
                    try:
                        honcho_rounds.append(honcho.round(ports))
                    except HonchoFailed as exc:
                        results.missing.update({figure: str(exc) for figure in HONCHO_FIGURES})
        finally:
            subprocess.run([*command, "down"], capture_output=True, env=env, timeout=COMMAND_TIMEOUT)
    versions = [_timed([*tooloo, "--version"], env)[0] for _ in range(9)]
    results.figures = {
        "upSeconds": statistics.median(ups),
        "downSeconds": statistics.median(downs),
        "downPortsFreeSeconds": statistics.median(freed),
        "orphans": max(orphans),
        "statusSeconds": statistics.median(statuses),
        "observeSeconds": statistics.median(observes),
        "versionSeconds": statistics.median(versions),
        "supervisorRssMb": statistics.median(rss),
    }
    if honcho_rounds and not results.missing:
        # Paired by round, so a machine that slows down meanwhile slows both sides of each ratio.
        results.figures |= {
            "honchoUpSeconds": statistics.median(up for up, _, _ in honcho_rounds),
            "honchoPortsFreeSeconds": statistics.median(free for _, free, _ in honcho_rounds),
            "honchoDownSeconds": statistics.median(gone for _, _, gone in honcho_rounds),
            "upVsHoncho": statistics.median(ours / theirs for ours, (theirs, _, _) in zip(ups, honcho_rounds)),
            "downVsHoncho": statistics.median(ours / theirs for ours, (_, _, theirs) in zip(downs, honcho_rounds)),
            "portsFreeVsHoncho": statistics.median(ours / theirs for ours, (_, theirs, _) in zip(freed, honcho_rounds)),
        }
    results.services = {name: {key: statistics.median(values) for key, values in timings.items()}
                        for name, timings in per_service.items()}
    return results


def _record_chain(document: dict[str, Any], status_asked_at: float, into: dict[str, dict[str, list[float]]]) -> None:
    """Per service, seconds after `up` started at which it was spawned and first healthy."""
    for name, service in document["services"].items():
        if service["uptime"] is None or service["startupSeconds"] is None:
            continue
        spawned = status_asked_at - service["uptime"]
        timings = into.setdefault(name, {"spawned": [], "healthy": []})
        timings["spawned"].append(spawned)
        timings["healthy"].append(spawned + service["startupSeconds"])


# -- honcho --------------------------------------------------------------------------------


class HonchoFailed(Exception):
    """honcho could not run the stack (its reason, with the end of its output)."""


def honcho_command() -> list[str] | str:
    """How to run honcho ≥ 2 (this interpreter's, else the one on PATH), or why it cannot be run."""
    import shutil
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("honcho")
    except PackageNotFoundError:
        installed = None
    if installed is not None and importlib.util.find_spec("honcho") is not None:
        if int(installed.split(".")[0]) < 2:
            return f"honcho {installed} is installed; the comparison needs honcho ≥ 2 (pip install 'tooloo[bench]')"
        return [sys.executable, "-m", "honcho"]
    on_path = shutil.which("honcho")
    if on_path is None:
        return "honcho is not installed (pip install 'tooloo[bench]', or scripts/setup)"
    return [on_path]


def procfile(config: Path, env: dict[str, str]) -> str:
    """A Procfile of the replicas the supervisor would run for `config`, launched from `env` as `tooloo up` is.

    Each line is the replica's command line in its spec's directory, under `env -i` with the
    environment the supervisor would build for it: the base is the supervisor's own (what it
    is launched with, `supervisor_environment`), the handover the command's settings and secrets.
    """
    from tooloo_cli.config import load_config
    from tooloo_cli.stack import stack_of
    from tooloo_cli.supervisor.environment import handover, service_environment
    from tooloo_cli.supervisor.standby import supervisor_environment

    loaded = load_config(config, env=env)
    base, handed = supervisor_environment(env), handover(loaded, env)["environment"]
    lines = []
    for spec in stack_of(loaded).specs.values():
        environment = " ".join(shlex.quote(f"{key}={value}")
                               for key, value in service_environment(spec, base, handed).items())
        for replica in spec.replicas:
            lines.append(f"{_label(replica.name)}: cd {shlex.quote(str(spec.cwd))} && exec env -i {environment} "
                         f"{shlex.join(spec.argv(replica))}")
    return "\n".join(lines) + "\n"


def _label(name: str) -> str:
    """A replica's name as a Procfile's (letters, digits, _ and - only): budget.2 becomes budget_2."""
    return "".join(char if char.isalnum() or char in "_-" else "_" for char in name)


@dataclass
class Honcho:
    command: list[str]
    directory: Path
    config: Path
    env: dict[str, str]

    @classmethod
    def prepare(cls, directory: Path, config: Path, env: dict[str, str]) -> Honcho | str:
        """A runner of the stack under honcho, or why there is none."""
        command = honcho_command()
        if isinstance(command, str):
            return command
        (directory / "Procfile").write_text(procfile(config, env))
        return cls(command, directory, config, env)

    def round(self, ports: list[tuple[str, int]]) -> tuple[float, float, float]:
        """One start and stop: (seconds until all ready, until the ports were free, until honcho exited)."""
        from tooloo_cli.config import load_config
        from tooloo_cli.stack import stack_of

        stack = stack_of(load_config(self.config, env=self.env))
        log_path = self.directory / "honcho.log"
        started = time.perf_counter()
        process = subprocess.Popen([*self.command, "start", "-f", str(self.directory / "Procfile"),
                                    "-d", str(self.directory), "--no-colour"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, cwd=self.directory)
        output = _Output(process, log_path)
        tree: list[Any] = []
        try:
            asyncio.run(_until_ready(stack, process, output))
            up = time.perf_counter() - started
            tree = _descendants(process.pid)  # what must be gone after the stop
            time.sleep(SETTLE)
            stopping = time.perf_counter()
            process.send_signal(signal.SIGTERM)
            freed = None
            deadline = stopping + 30
            while process.poll() is None and time.perf_counter() < deadline:
                if freed is None and _all_free(ports):
                    freed = time.perf_counter() - stopping
                time.sleep(PORT_POLL)
            if process.poll() is None:
                raise HonchoFailed("honcho did not exit within 30 s of SIGTERM")
            gone = time.perf_counter() - stopping
            return up, (freed if freed is not None else gone), gone
        except HonchoFailed as exc:
            _stop(process, tree or _descendants(process.pid))
            output.finish()
            raise HonchoFailed(f"{exc}; {log_path.name} ends with:\n{_tail(log_path)}") from None
        finally:
            _stop(process, tree or _descendants(process.pid))
            output.finish()


class _Output:
    """honcho's output, copied to its log by a thread, with a hook on each line (a replica said something).

    Read all along, not only while the stack starts: a pipe nobody reads would block honcho,
    and with it the services writing to it.
    """

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        import threading

        self.on_line: Any = None  # callable(label) while someone waits on lines, else None
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed by finish)
        self._thread = threading.Thread(target=self._copy, args=(process,), daemon=True)
        self._thread.start()

    def _copy(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self._log.write(line)
            hook = self.on_line
            if hook is not None:
                # "12:00:00 budget_2.1 | budget listening on ...": the label before the concurrency index.
                head = line.split(b"|", 1)[0].split()
                hook(head[-1].rsplit(b".", 1)[0].decode(errors="replace") if len(head) >= 2 else None)

    def finish(self) -> None:
        self._thread.join(timeout=10)
        if not self._log.closed:
            self._log.close()


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


async def _until_ready(stack: Any, process: subprocess.Popen[bytes], output: _Output,
                       timeout: float = 60.0) -> None:
    """Returns once every replica passed its liveness and then its readiness probe; HonchoFailed if honcho
    exits first, or after `timeout` seconds.

    Probed as the supervisor probes: the same probes, every FIRST_PROBE_INTERVAL, and at once
    when the replica writes a line (honcho prefixes each with its name).
    """
    from tooloo_cli.stack import probe_host
    from tooloo_cli.stack.probes import check
    from tooloo_cli.supervisor.process import FIRST_PROBE_INTERVAL

    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + timeout
    replicas = stack.replicas()
    said = {_label(replica.name): asyncio.Event() for replica in replicas}

    def heard(label: str | None) -> None:  # in the output's thread
        for name, event in said.items():
            if label is None or label == name:
                loop.call_soon_threadsafe(event.set)

    async def ready(spec: Any, replica: Any) -> None:
        event = said[_label(replica.name)]
        for probe in (spec.liveness, spec.readiness):
            while await check(probe, probe_host(spec.bind), replica.port) is not None:
                if process.poll() is not None:
                    raise HonchoFailed(f"honcho exited ({process.returncode}) before {replica.name} was ready")
                if time.perf_counter() > deadline:
                    raise HonchoFailed(f"{replica.name} was not ready under honcho within {timeout:g} s")
                event.clear()
                try:
                    await asyncio.wait_for(event.wait(), FIRST_PROBE_INTERVAL)
                except asyncio.TimeoutError:
                    pass

    output.on_line = heard
    try:
        await asyncio.gather(*(ready(stack.specs[replica.service], replica) for replica in replicas))
    finally:
        output.on_line = None


def _descendants(pid: int) -> list[Any]:
    """The processes below `pid` now (psutil.Process objects), or none if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _stop(process: subprocess.Popen[bytes], tree: list[Any]) -> None:
    """honcho and every process it had, by pid: SIGTERM, then SIGKILL to whatever is left after 10 s."""
    import psutil

    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    def running(member: psutil.Process) -> bool:
        try:
            return member.is_running() and member.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    _, alive = psutil.wait_procs([member for member in tree if running(member)], timeout=10)
    for member in alive:
        try:
            member.kill()  # psutil checks the pid is still that process before it signals
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
