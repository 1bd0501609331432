"""Finding, launching and clearing up after the detached supervisor (the CLI side).

    client = connect(paths)              # a ControlClient, or None when no supervisor runs
    client = launch(loaded, ["web"])     # starts `python -m tooloo_cli.supervisor web` in its own session
    client = launch(loaded, ["web"], standby)   # or tells a standby (standby.py) to run them

The supervisor runs with only what it passes on to its services and what its interpreter
reads (`standby.supervisor_environment`): no TOOLOO_* setting, no secret. The command's
own (its handover, see environment.py) go to it over a pipe.

Whether a supervisor is alive is the kernel's answer, not a pid's: the supervisor holds
an exclusive lock on `supervisor.lock` for its whole life. A pid file and socket without
that lock are stale, and are removed; nothing is ever signalled on their account.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from tooloo_cli.config import Config, ConfigError, LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.stack import Replica, ServiceSpec, probe_host, stack_of
from tooloo_cli.supervisor.control import ControlClient
from tooloo_cli.supervisor.early import launch_order
from tooloo_cli.supervisor.environment import handover, service_environment
from tooloo_cli.supervisor.lock import is_held
from tooloo_cli.supervisor.logs import tail
from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.standby import SUPERVISOR_MODULE, Standby, supervisor_environment

LAUNCH_TIMEOUT = 10.0


def connect(paths: StatePaths) -> ControlClient | None:
    """A client of the running supervisor, or None (stale state is cleared on the way)."""
    paths.check_readable()
    client = ControlClient(paths.socket)
    if paths.socket.exists() and client.answers():
        return client
    if paths.supervisor_lock.exists() and is_held(paths.supervisor_lock):
        # Alive but not answering yet: it may be starting. Give it a moment before judging.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if client.answers():
                return client
            time.sleep(0.05)
        pid = recorded_pid(paths)
        raise ToolooError(f"the supervisor{f' (pid {pid})' if pid else ''} runs but does not answer on "
                          f"{paths.socket}; stop it{f' with `kill {pid}`' if pid else ''} and run the command again")
    clear_stale(paths)
    return None


def recorded_pid(paths: StatePaths) -> int | None:
    """The pid in the supervisor's pid file, if it holds one."""
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def clear_stale(paths: StatePaths) -> None:
    """Removes the pid file and socket of a supervisor that is gone."""
    for leftover in (paths.pid_file, paths.socket):
        leftover.unlink(missing_ok=True)


def launch(loaded: LoadedConfig, names: list[str], standby: Standby | None = None) -> ControlClient:
    """Starts the detached supervisor with `names` and returns once its socket answers.

    With a `standby` (started before the configuration was read), it is the one told to run
    them; if it has died meanwhile, or dies before it could say why, one is launched the ordinary way.
    """
    paths = StatePaths.of(loaded)
    paths.ensure()
    handed = handover(loaded, os.environ)
    if standby is not None:
        logged = _size(paths.supervisor_log)
        process = standby.go({"config": handed["config"], "cwd": str(loaded.base_dir),
                              "log": str(paths.supervisor_log), "services": names,
                              "environment": handed["environment"],
                              "early": _early(loaded, names, handed["environment"])})
        if process is not None:
            client = _answering(paths, process)
            if client is not None:
                return client
            if process.poll() is None or _size(paths.supervisor_log) != logged:  # it hangs, or it said why
                _failed(paths, process)
            # It died before it had its log to say why (it writes nowhere until told its log):
            # one launched the ordinary way has its output in the log from its first byte.
    process = _launch_now(loaded, paths, names, handed)
    return _answering(paths, process) or _failed(paths, process)


def _early(loaded: LoadedConfig, names: list[str], handed: dict[str, str]) -> list[dict[str, Any]]:
    """What a standby spawns the moment it has its orders (early.py): the replicas of `names` that start at
    once, as the supervisor itself would spawn them (the environment is the one the standby was given)."""
    stack = stack_of(loaded)
    base = supervisor_environment(os.environ)
    orders = []
    for replica in stack.replicas(names):
        spec = stack.specs[replica.service]
        if spec.depends_on:  # waits for its dependencies: the supervisor starts it when they are ready
            continue
        try:
            environment = service_environment(spec, base, handed)
        except ConfigError:  # its env_file went missing: the supervisor says so, spawning it the ordinary way
            continue
        orders.append(launch_order(replica.name, spec.argv(replica), str(spec.cwd), environment, spec.builtin,
                                   probe_host(spec.bind), replica.port))
    return orders


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _answering(paths: StatePaths, process: Any) -> ControlClient | None:
    """The client once the supervisor's socket answers; None if `process` exits first, or it does not in time."""
    client = ControlClient(paths.socket)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while time.monotonic() < deadline:
        if paths.socket.exists() and client.answers():
            return client
        if process.poll() is not None:
            return None
        time.sleep(0.002)  # a stat a look: cheap, and `up` learns of the socket when it appears
    return None


def _failed(paths: StatePaths, process: Any) -> NoReturn:
    """A supervisor that did not answer: ended if it still runs; ToolooError with its log's end."""
    if process.poll() is None:  # it started but never answered: do not leave it behind
        process.terminate()
        process.wait(timeout=LAUNCH_TIMEOUT)
    last = "\n".join(tail(paths.supervisor_log, 15))
    raise ToolooError(f"the supervisor did not start; {paths.supervisor_log} ends with:\n{last}")


def _launch_now(loaded: LoadedConfig, paths: StatePaths, names: list[str], handed: dict[str, Any]) -> Any:
    """`python -m tooloo_cli.supervisor --handover NAME...`, its output to its log, the handover on its stdin."""
    import subprocess  # here: status and down never launch, and need not import it

    command = [sys.executable, "-m", SUPERVISOR_MODULE, "--handover"]
    if loaded.source is not None:
        command += ["--config", str(loaded.source)]
    command += names
    log = os.open(paths.supervisor_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=loaded.base_dir, start_new_session=True,
                                   env=supervisor_environment(os.environ))
    finally:
        os.close(log)
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(handed).encode())
        process.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: its log says why (see launch)
    return process


def status_document(loaded: LoadedConfig, names: list[str] | None = None) -> dict[str, Any]:
    """The supervisor's status, or every service stopped when no supervisor runs (rich-free, for --json);
    with `names`, of those services' replicas (or those replicas) only."""
    client = connect(StatePaths.of(loaded))
    if client is not None:
        document = client.call("GET", "/status")
    else:
        try:
            stack = stack_of(loaded)
        except ToolooError:  # a configuration the specs cannot be made of: the built-in services alone
            stack = stack_of(LoadedConfig(Config.defaults(), loaded.source, loaded.base_dir))
        document = {"ok": True, "supervisor": None,
                    "services": {replica.name: stopped_status(spec, replica)
                                 for spec in stack.specs.values() for replica in spec.replicas}}
    if names:
        document["services"] = {name: service for name, service in document["services"].items()
                                if name in names or service.get("service") in names}
    return document


def stopped_status(spec: ServiceSpec, replica: Replica) -> dict[str, Any]:
    """What status shows of a replica no supervisor runs (the keys of ManagedProcess.status()).

    Here, not in process.py: `tooloo status` must not pay for asyncio to say that nothing runs.
    """
    return {"name": replica.name, "service": spec.name, "replica": replica.index, "state": "stopped",
            "health": "unknown", "ready": False, "pid": None, "port": replica.port, "uptime": None, "restarts": 0,
            "lastExitCode": None, "error": None, "lastWarning": None, "cpuPercent": None, "rssBytes": None,
            "startupSeconds": None, "observable": spec.builtin, "probes": {}, "command": list(spec.argv(replica)),
            "exits": [], "restartAt": None}
