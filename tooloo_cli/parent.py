"""A child process that dies with its parent, even when the parent is killed with SIGKILL.

    die_with_parent(os.getppid())                 # in the child: from now on it dies with its parent
    preexec_fn=death_hook(os.getpid())            # or armed between fork and exec, for any program
    armed_from_environment()                      # one of tooloo's services, spawned by the supervisor

Contract: Linux's PR_SET_PDEATHSIG, with SIGKILL. It is armed after the fork, so the parent
may be gone by then: the child has been handed to another process (init, a subreaper),
getppid() says so, and the child exits at once (code 1), having started nothing. Where
there is no prctl (not Linux), nothing is armed.

Why a service arms it itself: a `preexec_fn` makes CPython fork the supervisor (no vfork)
and run Python in the child before exec, ~6 ms a spawn on these machines, eight spawns in a
row at every `up`. The supervisor names itself in PARENT_VARIABLE for its own services,
which arm it first thing; a command of the user's own still gets the hook.
Imports nothing of the project: the supervisor and the services both use it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from functools import cache

PARENT_VARIABLE = "TOOLOO_SUPERVISOR_PID"  # the pid of the supervisor that spawned this process
PR_SET_PDEATHSIG = 1


@cache
def _prctl() -> Callable[..., int]:
    import ctypes  # here: ~4 ms to import, and only Linux has prctl

    return ctypes.CDLL(None, use_errno=True).prctl


def death_hook(parent: int) -> Callable[[], None]:
    """The function that arms it in a child of `parent`. prctl is looked up here, before the fork:
    a dlopen in a forked child could wait forever on a lock another thread of the parent held."""
    if not sys.platform.startswith("linux"):
        return lambda: None
    prctl = _prctl()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


def die_with_parent(parent: int) -> None:
    """SIGKILL to this process when `parent` (its parent now) ends; exits at once if it already has."""
    death_hook(parent)()


def armed_from_environment() -> None:
    """Arms die_with_parent for the supervisor named in PARENT_VARIABLE, if any (`tooloo serve` has none)."""
    parent = os.environ.get(PARENT_VARIABLE, "")
    if parent.isdigit():
        die_with_parent(int(parent))
