"""CPU and memory of a service's process tree, sampled by the supervisor every second.

    usage = TreeUsage()
    usage.sample(pid)              # every USAGE_INTERVAL seconds
    usage.cpu_percent, usage.rss_bytes
    usage.cpu_seconds              # CPU time the tree has used, summed over samples: a counter
    own_rss()                      # the supervisor's own resident memory

A CPU percentage is a rate: it needs two readings some time apart. Sampling on a clock,
not when someone asks, is what makes `tooloo status` (which asks once) show the CPU a
busy service really uses, instead of the ~0 % of the milliseconds between two requests.

The tree is found through /proc/PID/task/PID/children (one small read per process), and
each member's CPU time and resident memory are read from /proc/PID/stat and statm: a
sample of eight services costs a fraction of a millisecond instead of a scan of every
process on the machine, and the supervisor never imports psutil (~25 ms of processor and
~2 MB of its memory, spent while the services it has just spawned need both). The
figures are psutil's: CPU % is the tree's user and system time over the wall time since
the last sample, not divided by the number of processors; the first reading of a member
counts from the next sample. Where /proc is not Linux's, psutil does the reading.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tooloo_cli.procfs import read_process

USAGE_INTERVAL = 1.0
# CPU time is counted in clock ticks (10 ms): over a shorter interval than this, one tick more or
# less reads as a process using several cores. A sample sooner updates the memory, not the CPU.
MIN_CPU_INTERVAL = 0.5


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, as far as they can be read (a process may exit meanwhile)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        # Each thread's own children: a child forked by a thread other than the main one (a Go
        # program, a Python worker thread) is listed under that thread only.
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in children.read_text().split())
            except OSError:  # the thread or the process ended meanwhile
                continue
    return tree


def own_rss() -> int | None:
    """This process's resident memory in bytes (None if it cannot be read)."""
    try:
        return read_process(os.getpid())[2]
    except (OSError, ValueError, IndexError):
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except Exception:  # no psutil reading either: status shows "-"
            return None


class TreeUsage:
    """The last sample of one process tree: CPU % over the last interval and resident memory."""

    def __init__(self) -> None:
        self.cpu_percent: float | None = None
        self.rss_bytes: int | None = None
        # What every member seen has used, counted as it was read: it only grows (a member that exits
        # keeps what it was last seen using), across restarts too, as a Prometheus counter must.
        self.cpu_seconds = 0.0
        self._previous: dict[int, tuple[int, float, float]] = {}  # pid -> (start, CPU s, when) at the last sample
        self._members: dict[int, Any] = {}  # pid -> psutil.Process, where /proc cannot be read
        self._used: dict[int, float] = {}  # pid -> its CPU seconds at the last psutil reading

    def sample(self, pid: int | None) -> None:
        if pid is None:
            self.clear()
            return
        if not Path("/proc/self/stat").exists():
            self._sample_with_psutil(pid)
            return
        now = time.monotonic()
        cpu, rss, seen = 0.0, 0, {}
        too_soon = False
        for member in process_tree(pid):
            try:
                started, seconds, resident = read_process(member)
            except (OSError, ValueError, IndexError):  # it exited since its parent listed it
                continue
            previous = self._previous.get(member)
            if previous is not None and previous[0] == started:
                if now - previous[2] < MIN_CPU_INTERVAL:
                    too_soon = True
                    seen[member] = previous  # the reading it will be measured against, kept
                else:
                    used = max(seconds - previous[1], 0.0)
                    cpu += used / (now - previous[2]) * 100
                    self.cpu_seconds += used
                    seen[member] = (started, seconds, now)
            else:
                self.cpu_seconds += seconds  # a member seen for the first time: all it has used so far
                seen[member] = (started, seconds, now)
            rss += resident
        if not seen:
            self.clear()
            return
        self._previous = seen
        self.rss_bytes = rss
        if not too_soon:
            self.cpu_percent = cpu

    def _sample_with_psutil(self, pid: int) -> None:
        import psutil

        try:
            self._members = {member: self._members.get(member) or psutil.Process(member)
                             for member in process_tree(pid)}
            # A member's first reading is 0.0 by psutil's contract; it counts from the next one.
            cpu = sum(member.cpu_percent(None) for member in self._members.values())
            rss = sum(member.memory_info().rss for member in self._members.values())
            used = {pid: sum(member.cpu_times()[:2]) for pid, member in self._members.items()}
        except psutil.Error:  # a member gone mid-reading: what the others used is counted at the next sample
            self._members.clear()
            self.cpu_percent = self.rss_bytes = None
            return
        self.cpu_seconds += sum(max(seconds - self._used.get(pid, 0.0), 0.0) for pid, seconds in used.items())
        self._used = used
        self.cpu_percent, self.rss_bytes = cpu, rss

    def clear(self) -> None:
        self._previous.clear()
        self._members.clear()
        self._used.clear()
        self.cpu_percent = self.rss_bytes = None
