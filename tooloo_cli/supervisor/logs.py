"""Per-service log files: written with size rotation, read back with tail and follow.

    log = RotatingLog(paths.log("budget"), max_bytes=10 * 1024 * 1024, backups=3)
    log.write(b"GET /health 200 0.4ms -\n")
    tail(paths.log("budget"), 20)          # the last 20 lines, across a rotation

Rotation renames budget.log → budget.log.1 → … → budget.log.N (the oldest is dropped).
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import BinaryIO


class RotatingLog:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = _open_private(path)
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for number in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._file = _open_private(self.path)
        self._size = 0

    def close(self) -> None:
        self._file.close()


def _open_private(path: Path) -> BinaryIO:
    """An unbuffered append-only file readable by its owner only (logs may hold request paths)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab", buffering=0)


def tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log, reaching into the previous file after a rotation."""
    found: deque[str] = deque(maxlen=lines)
    for candidate in (path.with_name(f"{path.name}.1"), path):
        if candidate.exists():
            with open(candidate, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    found.append(line.rstrip("\n"))
    return list(found)
