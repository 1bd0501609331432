"""CPU and memory of a service's process tree, sampled by the supervisor every second.

    usage = TreeUsage()
    usage.sample(pid)              # every USAGE_INTERVAL seconds
    usage.cpu_percent, usage.rss_bytes

A CPU percentage is a rate: it needs two readings some time apart. Sampling on a clock,
not when someone asks, is what makes `tooloo status` (which asks once) show the CPU a
busy service really uses, instead of the ~0 % of the milliseconds between two requests.

The tree is found through /proc/PID/task/PID/children (one small read per process), so a
sample of eight services costs a fraction of a millisecond instead of a scan of every
process on the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

USAGE_INTERVAL = 1.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, as far as they can be read (a process may exit meanwhile)."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        pending.extend(int(child) for child in children)
    return tree


class TreeUsage:
    """The last sample of one process tree: CPU % over the last interval and resident memory."""

    def __init__(self) -> None:
        self.cpu_percent: float | None = None
        self.rss_bytes: int | None = None
        self._members: dict[int, Any] = {}  # pid -> psutil.Process, kept so each has a previous reading

    def sample(self, pid: int | None) -> None:
        if pid is None:
            self.clear()
            return
        import psutil

        try:
            self._members = {member: self._members.get(member) or psutil.Process(member)
                             for member in process_tree(pid)}
            # A member's first reading is 0.0 by psutil's contract; it counts from the next one.
            cpu = sum(member.cpu_percent(None) for member in self._members.values())
            rss = sum(member.memory_info().rss for member in self._members.values())
        except psutil.Error:
            self.clear()
            return
        self.cpu_percent, self.rss_bytes = cpu, rss

    def clear(self) -> None:
        self._members.clear()
        self.cpu_percent = self.rss_bytes = None
