"""Replicas a standby supervisor spawns the moment it has its orders, before it imports its event loop.

    early = spawn_early(orders["early"])    # {"web": EarlySpawn, ...}: spawned now, in the orders' order
    ...                                     # asyncio, the configuration and the manager are imported
    spawn = early.pop("web")                # the supervisor adopts it (adopted.py) as its first start
    end_unclaimed(early)                    # and ends, by pid, whatever nobody adopted

Why: a standby (standby.py) would otherwise read its orders only once it has imported
everything it runs on, ~0.1 s after `tooloo up` has sent them, and that import is the
whole of what stands between the command and the services' first spawn. What the
services need to be spawned is known to the command already, so it sends that too
(`launch_order`), and the imports run while the services start.

Contract: each order is {"replica", "argv", "cwd", "env", "builtin", "host", "port"}, made by the command
with the very function the supervisor spawns with (`launch_order` beside `popen_arguments`),
from the environment the standby was started with, so an early replica runs exactly what
its first ordinary spawn would. Only replicas that start at once are sent (no
`depends_on` to wait for), and only while the command holds the launch lock, having found
their ports free; each port is looked at again just before its spawn. A replica that
cannot be spawned here, or whose port was taken meanwhile, is left out, and the
supervisor spawns it the ordinary way, saying why if it fails again. Where a pidfd
cannot be had (Linux before 5.3, a seccomp profile that refuses it), nothing is spawned
early: an end that could not be watched would mean spawning twice. What an early replica writes before it is
adopted waits in its pipes, and is stamped in its log when the supervisor reads it, up
to ~0.1 s late; its uptime and "ready in" count from its spawn. Imports nothing of the
project but tooloo_cli.parent and tooloo_cli.ports: it runs before everything else.

Measured on 2 cores (`tooloo bench startup`): the services' first spawn comes at ~0.12 s
instead of ~0.3 s, but all healthy no sooner (up and down, A against B: 0.99), as both
processors are busy from the first spawn on either way: the imports moved, not gone. The
head start is what is left once processors are not the bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tooloo_cli.parent import PARENT_VARIABLE, death_hook
from tooloo_cli.ports import is_free

END_WAIT = 1.0  # seconds an ended replica is waited for (SIGKILLed, it is gone at once unless stuck in the kernel)


class EarlySpawn:
    """A replica's process, spawned before the supervisor ran, with the pidfd its end is learnt from."""

    __slots__ = ("popen", "pidfd", "started_at")

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int, started_at: float) -> None:
        self.popen = popen
        self.pidfd = pidfd
        self.started_at = started_at  # time.monotonic() at its spawn

    def end(self) -> None:
        """Ends it by its pid (SIGKILL to its group: nothing of it has been adopted), reaped, its fds closed."""
        _end(self.popen)
        os.close(self.pidfd)


def popen_arguments(cwd: str | os.PathLike[str], env: Mapping[str, str], builtin: bool,
                    supervisor: int) -> dict[str, Any]:
    """How a replica is spawned, early or not (subprocess.Popen's and asyncio's keywords alike).

    Its own session, so a signal reaches its whole group; it dies with the supervisor: one of
    tooloo's own services arms that itself, told who its supervisor is (tooloo_cli/parent.py),
    and is spawned without a preexec hook (which costs each spawn a fork of the supervisor and
    Python in the child); any other command gets the hook.
    """
    return {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "cwd": cwd,
            "start_new_session": True, "preexec_fn": None if builtin else death_hook(supervisor),
            "env": {**env, PARENT_VARIABLE: str(supervisor)} if builtin else dict(env)}


def launch_order(replica: str, argv: Sequence[str], cwd: str, env: Mapping[str, str], builtin: bool,
                 host: str, port: int | None) -> dict[str, Any]:
    """One order of the command's `early` list (the module's contract); `port` None: it has none."""
    return {"replica": replica, "argv": list(argv), "cwd": cwd, "env": dict(env), "builtin": builtin,
            "host": host, "port": port}


def _valid(order: Any) -> bool:
    return isinstance(order, dict) and isinstance(order.get("replica"), str) and isinstance(order.get("cwd"), str) \
        and isinstance(order.get("builtin"), bool) and isinstance(order.get("argv"), list) and bool(order["argv"]) \
        and all(isinstance(part, str) for part in order["argv"]) and isinstance(order.get("env"), dict) \
        and all(isinstance(k, str) and isinstance(v, str) for k, v in order["env"].items()) \
        and isinstance(order.get("host"), str) and (order.get("port") is None or type(order.get("port")) is int)


def spawn_early(orders: Any) -> dict[str, EarlySpawn]:
    """Spawns each valid order's replica now; those it could not are left to the supervisor."""
    if not isinstance(orders, list) or not _pidfds():
        return {}
    spawned: dict[str, EarlySpawn] = {}
    supervisor = os.getpid()
    try:
        for order in orders:
            if not _valid(order) or order["replica"] in spawned or not _port_free(order["host"], order["port"]):
                continue
            try:
                popen = subprocess.Popen(order["argv"], **popen_arguments(order["cwd"], order["env"],
                                                                          order["builtin"], supervisor))
            except (OSError, ValueError, subprocess.SubprocessError):  # the ordinary spawn says what is wrong
                continue
            started_at = time.monotonic()
            try:
                pidfd = os.pidfd_open(popen.pid)
            except OSError:  # out of descriptors, say: it cannot be watched, so it is not kept
                _end(popen)
                continue
            spawned[order["replica"]] = EarlySpawn(popen, pidfd, started_at)
    except BaseException:  # nobody would know of what was spawned
        end_unclaimed(spawned)
        raise
    return spawned


def _pidfds() -> bool:
    """Whether this process can have pidfds at all: asked before anything is spawned, not after."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _port_free(host: str, port: int | None) -> bool:
    try:
        return port is None or is_free(host, port)
    except OSError:  # an address this machine lacks, say: the ordinary spawn says so
        return False


def end_unclaimed(early: dict[str, EarlySpawn]) -> None:
    """Ends, by their pids, the early replicas nobody adopted (the supervisor could not start, say)."""
    while early:
        early.popitem()[1].end()


def signal_group(group: int, signum: int) -> None:
    """`signum` to a replica's process group (a session leader's pid is its group's id), if it still has one."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _end(popen: subprocess.Popen[bytes]) -> None:
    signal_group(popen.pid, signal.SIGKILL)
    try:
        popen.wait(timeout=END_WAIT)
    except subprocess.TimeoutExpired:  # stuck in the kernel: it is reaped whenever it goes (subprocess._cleanup)
        pass
    for pipe in (popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
