"""The stacks running on this machine, for `tooloo ls`: each supervisor signs in while it runs.

    entry = sign_in(paths, config_path)      # the supervisor, once its control socket answers
    stacks(os.environ)                       # [{"stateDir": …, "config": …, "pid": …}, …] of those alive
    sign_out(entry)                          # the supervisor, as it exits

A stack is known by its state directory: wherever its tooloo.toml is, its supervisor writes
one small file (0600) into the registry, named by its pid and saying which directory it
supervises, and removes it when it exits. (By pid, not by a hash of the directory: hashlib
would map OpenSSL's libcrypto into the supervisor, 3.4 MiB of its memory for a file name.)
The supervisor signs in again if its entry disappears while it runs.

The registry is the user's own, `$XDG_STATE_HOME/tooloo/stacks` (`~/.local/state/tooloo/stacks`):
not the runtime directory, which logind empties when the user's last session ends, while a
detached supervisor goes on. It must be a directory of the user's, closed to others (0700),
or nobody signs in there. An entry whose supervisor is gone (its pid no longer runs the
supervisor of that directory: a SIGKILL, a reboot) is left out and removed by the next reading.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tooloo_cli.supervisor.paths import StatePaths
from tooloo_cli.supervisor.standby import SUPERVISOR_MODULE


def registry_dir(environ: Mapping[str, str] = os.environ) -> Path:
    state = environ.get("XDG_STATE_HOME", "")
    if state and os.path.isabs(state):
        return Path(state) / "tooloo" / "stacks"
    home = environ.get("HOME", "")
    if not home or not os.path.isabs(home):  # unset, empty or relative: the account's own
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:  # a uid with no account (a container's): where the process is told to keep state
            home = os.path.abspath(home or ".")
    return Path(home) / ".local" / "state" / "tooloo" / "stacks"


def _private_directory(directory: Path) -> bool:
    """Creates `directory` and the missing ones above it 0700; whether it is this user's and closed to others."""
    missing = [parent for parent in (directory, *directory.parents) if not parent.exists()]
    for parent in reversed(missing):
        try:
            parent.mkdir(mode=0o700)
        except FileExistsError:
            pass
    info = directory.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and info.st_mode & 0o077 == 0


def sign_in(paths: StatePaths, config: Path | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Records this process as the supervisor of `paths`; None when the registry cannot be written
    (`tooloo ls` then misses this stack, which is no reason for the stack not to run)."""
    directory = registry_dir(environ)
    entry = directory / f"{os.getpid()}.json"
    text = json.dumps({"stateDir": str(paths.root.resolve()), "pid": os.getpid(),
                       "config": None if config is None else str(config)}) + "\n"
    try:
        if not _private_directory(directory):
            return None
        # Whole or not at all (a reader never sees it half written), and never through a link planted there.
        partial = directory / f".{os.getpid()}.partial"
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.replace(partial, entry)
    except OSError:
        return None
    return entry


def still_signed_in(entry: Path | None, paths: StatePaths, config: Path | None,
                    environ: Mapping[str, str] = os.environ) -> Path | None:
    """`entry`, written again if it has gone (someone cleared the registry) while the supervisor runs."""
    try:
        if entry is not None:
            os.stat(entry)
            return entry
    except FileNotFoundError:
        pass
    except OSError:  # unreadable for now (a permission changed, a network home away): ask again later
        return entry
    return sign_in(paths, config, environ)


def sign_out(entry: Path | None) -> None:
    """Removes this supervisor's entry."""
    if entry is not None:
        entry.unlink(missing_ok=True)


def stacks(environ: Mapping[str, str] = os.environ) -> list[dict[str, Any]]:
    """The entries whose supervisor still runs, by state directory; the others are removed."""
    found = []
    directory = registry_dir(environ)
    for entry in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        record = _read(entry)
        if record is not None and _supervises(record):
            found.append(record)
        else:
            entry.unlink(missing_ok=True)
    return sorted(found, key=lambda record: record["stateDir"])


def _read(entry: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    valid = isinstance(record, dict) and isinstance(record.get("pid"), int) and isinstance(record.get("stateDir"), str)
    return record if valid else None


def _supervises(record: dict[str, Any]) -> bool:
    """Whether the recorded pid is still the supervisor of the recorded directory, not a pid reused since
    (after a reboot, say, which leaves the entry and the pid file): the process runs tooloo's supervisor,
    and the directory's own pid file names it."""
    try:
        os.kill(record["pid"], 0)
        with open(f"/proc/{record['pid']}/cmdline", "rb") as handle:
            command = handle.read().split(b"\0")
    except (ProcessLookupError, PermissionError, OSError):  # gone, or another user's: not this user's stack
        return False
    if SUPERVISOR_MODULE.encode() not in command:
        return False
    try:
        return int(StatePaths(Path(record["stateDir"])).pid_file.read_text()) == record["pid"]
    except (OSError, ValueError):
        return False
