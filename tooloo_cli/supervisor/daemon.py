"""Finding, launching and clearing up after the detached supervisor (the CLI side).

    client = connect(paths)              # a ControlClient, or None when no supervisor runs
    client = launch(loaded, ["web"])     # starts `python -m tooloo_cli.supervisor web` in its own session

The supervisor is launched with an environment scrubbed of TOOLOO_* settings and secrets;
the command's own (its handover, see environment.py) go to it over a pipe.

Whether a supervisor is alive is the kernel's answer, not a pid's: the supervisor holds
an exclusive lock on `supervisor.lock` for its whole life. A pid file and socket without
that lock are stale, and are removed; nothing is ever signalled on their account.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from tooloo_cli.config import Config, LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.stack import Replica, ServiceSpec, stack_of
from tooloo_cli.supervisor.control import ControlClient
from tooloo_cli.supervisor.environment import handover, scrubbed
from tooloo_cli.supervisor.lock import is_held
from tooloo_cli.supervisor.logs import tail
from tooloo_cli.supervisor.paths import StatePaths

LAUNCH_TIMEOUT = 10.0
SUPERVISOR_MODULE = "tooloo_cli.supervisor"


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
        pid = _recorded_pid(paths)
        raise ToolooError(f"the supervisor{f' (pid {pid})' if pid else ''} runs but does not answer on "
                          f"{paths.socket}; stop it{f' with `kill {pid}`' if pid else ''} and run the command again")
    clear_stale(paths)
    return None


def _recorded_pid(paths: StatePaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def clear_stale(paths: StatePaths) -> None:
    """Removes the pid file and socket of a supervisor that is gone."""
    for leftover in (paths.pid_file, paths.socket):
        leftover.unlink(missing_ok=True)


def launch(loaded: LoadedConfig, names: list[str]) -> ControlClient:
    """Starts the detached supervisor with `names` and returns once its socket answers."""
    paths = StatePaths.of(loaded)
    paths.ensure()
    command = [sys.executable, "-m", SUPERVISOR_MODULE, "--handover"]
    if loaded.source is not None:
        command += ["--config", str(loaded.source)]
    command += names
    log = os.open(paths.supervisor_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=loaded.base_dir, start_new_session=True,
                                   env=scrubbed(os.environ, loaded))
    finally:
        os.close(log)
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(handover(loaded, os.environ)).encode())
        process.stdin.close()
    except BrokenPipeError:
        pass  # it died at once: its log says why (below)
    client = ControlClient(paths.socket)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while time.monotonic() < deadline:
        if paths.socket.exists() and client.answers():
            return client
        if process.poll() is not None:
            break
        time.sleep(0.01)
    if process.poll() is None:  # it started but never answered: do not leave it behind
        process.terminate()
        process.wait(timeout=LAUNCH_TIMEOUT)
    last = "\n".join(tail(paths.supervisor_log, 15))
    raise ToolooError(f"the supervisor did not start; {paths.supervisor_log} ends with:\n{last}")


def status_document(loaded: LoadedConfig) -> dict[str, Any]:
    """The supervisor's status, or every service stopped when no supervisor runs (rich-free, for --json)."""
    client = connect(StatePaths.of(loaded))
    if client is not None:
        return client.call("GET", "/status")
    try:
        stack = stack_of(loaded)
    except ToolooError:  # a configuration the specs cannot be made of: the built-in services alone
        stack = stack_of(LoadedConfig(Config.defaults(), loaded.source, loaded.base_dir))
    return {"ok": True, "supervisor": None,
            "services": {replica.name: stopped_status(spec, replica)
                         for spec in stack.specs.values() for replica in spec.replicas}}


def stopped_status(spec: ServiceSpec, replica: Replica) -> dict[str, Any]:
    """What status shows of a replica no supervisor runs (the keys of ManagedProcess.status()).

    Here, not in process.py: `tooloo status` must not pay for asyncio to say that nothing runs.
    """
    return {"name": replica.name, "service": spec.name, "replica": replica.index, "state": "stopped",
            "health": "unknown", "ready": False, "pid": None, "port": replica.port, "uptime": None, "restarts": 0,
            "lastExitCode": None, "error": None, "lastWarning": None, "cpuPercent": None, "rssBytes": None,
            "startupSeconds": None, "observable": spec.builtin, "probes": {}}
