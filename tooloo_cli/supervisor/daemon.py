"""Finding, launching and clearing up after the detached supervisor (the CLI side).

    client = connect(paths)              # a ControlClient, or None when no supervisor runs
    client = launch(loaded, ["web"])     # starts `python -m tooloo_cli.supervisor web` in its own session

A pid file whose process is gone, or is not a tooloo supervisor, is stale: it is removed
together with the socket, and nothing is ever signalled on its account.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError
from tooloo_cli.supervisor.control import ControlClient
from tooloo_cli.supervisor.logs import tail
from tooloo_cli.supervisor.paths import StatePaths

LAUNCH_TIMEOUT = 10.0
SUPERVISOR_MODULE = "tooloo_cli.supervisor"


def _recorded_pid(paths: StatePaths) -> int | None:
    try:
        return int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_our_supervisor(pid: int) -> bool:
    import psutil

    try:
        command = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    return SUPERVISOR_MODULE in command


def connect(paths: StatePaths) -> ControlClient | None:
    """A client of the running supervisor, or None (stale state is cleared on the way)."""
    client = ControlClient(paths.socket)
    if paths.socket.exists() and client.answers():
        return client
    pid = _recorded_pid(paths)
    if pid is not None and _is_our_supervisor(pid):
        # Alive but not answering yet: it may be starting. Give it a moment before judging.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if client.answers():
                return client
            time.sleep(0.05)
        raise ToolooError(f"the supervisor (pid {pid}) runs but does not answer on {paths.socket}; "
                          f"stop it with `kill {pid}` and run the command again")
    clear_stale(paths)
    return None


def clear_stale(paths: StatePaths) -> bool:
    """Removes a pid file and socket left by a supervisor that is gone; True if there were any."""
    found = False
    for leftover in (paths.pid_file, paths.socket):
        if leftover.exists() or leftover.is_symlink():
            leftover.unlink(missing_ok=True)
            found = True
    return found


def launch(loaded: LoadedConfig, names: list[str]) -> ControlClient:
    """Starts the detached supervisor with `names` and returns once its socket answers."""
    paths = StatePaths.of(loaded)
    paths.ensure()
    command = [sys.executable, "-m", SUPERVISOR_MODULE]
    if loaded.source is not None:
        command += ["--config", str(loaded.source)]
    command += names
    with open(paths.supervisor_log, "ab") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=loaded.base_dir, start_new_session=True, env=os.environ.copy())
    client = ControlClient(paths.socket)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while time.monotonic() < deadline:
        if paths.socket.exists() and client.answers():
            return client
        if process.poll() is not None:
            break
        time.sleep(0.01)
    last = "\n".join(tail(paths.supervisor_log, 15))
    raise ToolooError(f"the supervisor did not start; {paths.supervisor_log} ends with:\n{last}")


def status_document(loaded: LoadedConfig) -> dict[str, Any]:
    """The supervisor's status, or every service stopped when no supervisor runs (rich-free, for --json)."""
    client = connect(StatePaths.of(loaded))
    if client is not None:
        return client.request("GET", "/status")[1]
    return {"ok": True, "supervisor": None, "services": {
        name: {"name": name, "state": "stopped", "health": "unknown", "pid": None, "port": settings.port,
               "uptime": None, "restarts": 0, "lastExitCode": None, "error": None, "cpuPercent": None,
               "rssBytes": None, "startupSeconds": None}
        for name, settings in loaded.services.items()}}
