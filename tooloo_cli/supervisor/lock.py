"""Advisory file locks (flock) in the state directory.

    with FileLock(paths.launch_lock):            # one `tooloo up` at a time decides to launch
        ...
    held = FileLock(paths.supervisor_lock)
    held.acquire(blocking=False)                 # False: a supervisor already runs here

The kernel releases a lock when its holder dies, however it dies (kill -9 included): a
held supervisor lock means a live supervisor for this state directory, with no pid to
trust or reuse.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from tooloo_cli.errors import ToolooError


class LockTimeout(ToolooError):
    """Another process held the lock for longer than we would wait (exit 1)."""


class FileLock:
    """An exclusive flock on `path`; `with` waits at most `timeout` seconds (forever when None)."""

    def __init__(self, path: Path, timeout: float | None = None, holder: str = "another tooloo command") -> None:
        self.path = path
        self.timeout = timeout
        self.holder = holder
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def acquire_within(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for the lock; LockTimeout naming who holds it, past that."""
        deadline = time.monotonic() + timeout
        while not self.acquire(blocking=False):
            if time.monotonic() > deadline:
                raise LockTimeout(f"{self.holder} has held {self.path} for over {timeout:g} s; "
                                  "wait for it to finish, or find it with `fuser -v " f"{self.path}`")
            time.sleep(0.02)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> FileLock:
        if self.timeout is None:
            self.acquire()
        else:
            self.acquire_within(self.timeout)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_held(path: Path) -> bool:
    """Whether another process holds the lock at `path` right now."""
    probe = FileLock(path)
    if probe.acquire(blocking=False):
        probe.release()
        return False
    return True
