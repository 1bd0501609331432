"""SQLite files as the resilience modules keep them: private, checked, moved aside only when corrupt.

    prepare_private(path)               # exists, mode 0600 (SQLite gives -wal and -shm the same mode)
    problem = integrity_problem(path)   # None, or why the file is not a usable database
    aside = move_aside(path)            # path.corrupt-<ns> (and its -wal); the newest 3 copies are kept
    is_corruption(exc)                  # the file is damaged, as opposed to the disk being full or busy

Only corruption (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check) justifies moving a
file aside: a full disk, an I/O error or a lock is a condition of the moment, and a file
renamed for it would lose good data and pile up copies.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from tooloo_cli.resilience.errors import ResilienceError

_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
ASIDE_COPIES_KEPT = 3


class CorruptDatabaseError(ResilienceError, sqlite3.DatabaseError):
    """A database that opens but fails its integrity check."""


def is_corruption(exc: BaseException) -> bool:
    if isinstance(exc, CorruptDatabaseError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def prepare_private(path: Path) -> None:
    """Creates the directory (0700) and the file (0600) if missing, and tightens an existing file.

    SQLite would create the file with the process's umask (0644 as a rule): ledgers and
    caches hold what clients sent, and are for the stack's user only.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for member in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            mode = member.stat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_IMODE(mode) & 0o077:
            os.chmod(member, stat.S_IMODE(mode) & 0o700)


def check_integrity(db: sqlite3.Connection) -> None:
    """Raises CorruptDatabaseError unless PRAGMA quick_check says ok."""
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise CorruptDatabaseError(f"quick_check: {verdict}")


def integrity_problem(path: Path) -> str | None:
    """Why the database at `path` is corrupt, or None: missing is fine, and so is anything that
    is not a regular file (opening it fails on its own, with its own message). Errors that
    are not corruption (a lock, a full disk) are raised: they say nothing about the file."""
    if not path.is_file():
        return None
    db = sqlite3.connect(path, isolation_level=None)
    try:
        check_integrity(db)
    except sqlite3.Error as exc:
        if is_corruption(exc):
            return str(exc)
        raise
    finally:
        db.close()
    return None


def move_aside(path: Path) -> Path:
    """Renames a corrupt database (and its WAL) out of the way; returns the new name.

    Its shared-memory file is removed (it is rebuilt from the WAL), and only the newest
    ASIDE_COPIES_KEPT copies are kept, so repeated trouble cannot fill the disk.
    """
    aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
    path.replace(aside)
    wal = Path(f"{path}-wal")
    if wal.exists():
        wal.replace(Path(f"{aside}-wal"))
    Path(f"{path}-shm").unlink(missing_ok=True)
    copies = sorted(candidate for candidate in path.parent.glob(f"{path.name}.corrupt-*")
                    if not candidate.name.endswith("-wal"))
    for old in copies[:-ASIDE_COPIES_KEPT]:
        old.unlink(missing_ok=True)
        Path(f"{old}-wal").unlink(missing_ok=True)
    return aside
