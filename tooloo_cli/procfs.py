"""What Linux's /proc says of one process: when it started, the CPU it has used, its resident memory.

    started_ticks, cpu_seconds, resident_bytes = read_process(pid)   # OSError or ValueError if unreadable
    started_ticks / TICKS + boot_time()                              # its start, in epoch seconds
    age(os.getpid())                                                 # seconds since this process began

Read by the supervisor (each replica's process tree, supervisor/usage.py) and by every
process's /metrics (exposition.process_samples): one reading of the same two files.
"""

from __future__ import annotations

import os
import time
from functools import cache

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100  # clock ticks a second
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_process(pid: int) -> tuple[int, float, int]:
    """(start time, CPU seconds, resident bytes) of `pid` from /proc; OSError or ValueError if it cannot be read.

    The start time (clock ticks after boot) tells a process from a later one given the same pid.
    """
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()  # the name may hold spaces and parentheses
    with open(f"/proc/{pid}/statm", "rb") as statm:
        resident = int(statm.read().split()[1])
    # Fields 14 and 15 (utime, stime) and 22 (starttime), counted from 3 after the name.
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / TICKS, resident * PAGE


@cache
def boot_time() -> int:
    """When the machine booted, in epoch seconds (/proc/stat's btime); OSError or StopIteration if unreadable."""
    with open("/proc/stat", "rb") as system:
        return next(int(line.split()[1]) for line in system if line.startswith(b"btime "))


def age(pid: int) -> float:
    """Seconds since `pid` began (to a clock tick); OSError or ValueError if unreadable, AttributeError
    without CLOCK_BOOTTIME (not Linux).

    Both ends count from boot (CLOCK_BOOTTIME, as the start tick does), so this is not the whole
    second off that a start from /proc/stat's btime (epoch seconds, as psutil's create_time) can be.
    """
    return max(time.clock_gettime(time.CLOCK_BOOTTIME) - read_process(pid)[0] / TICKS, 0.0)


def age_or_none(pid: int) -> float | None:
    """age(pid), or None when it cannot be read: the process is gone, there is no /proc (or not
    Linux's), or no CLOCK_BOOTTIME."""
    try:
        return age(pid)
    except (OSError, ValueError, IndexError, AttributeError):
        return None
