"""The stacks running on this machine, for `tooloo ls`: each supervisor signs in while it runs.

    entry = sign_in(paths, config_path)      # the supervisor, once its control socket answers
    stacks(os.environ)                       # [{"stateDir": …, "config": …, "pid": …}, …] of those alive
    sign_out(entry)                          # the supervisor, as it exits

A stack is known by its state directory: wherever its tooloo.toml is, its supervisor writes
one small file (0600) into the registry, named by its pid and saying which directory it
supervises, and removes it when it exits. (By pid, not by a hash of the directory: hashlib
would map OpenSSL's libcrypto into the supervisor, 3.4 MiB of its memory for a file name.) The registry is the user's own: `$XDG_RUNTIME_DIR/tooloo/stacks` (a tmpfs emptied at
logout and at boot, so a supervisor killed by SIGKILL leaves no entry past a reboot), else
`$XDG_STATE_HOME/tooloo/stacks` (`~/.local/state/tooloo/stacks`). An entry whose supervisor
is gone (its pid no longer runs the supervisor of that directory) is left out and removed
by the next reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tooloo_cli.supervisor.paths import StatePaths, write_private


def registry_dir(environ: Mapping[str, str] = os.environ) -> Path:
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime) / "tooloo" / "stacks"
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path(environ.get("HOME", "~")).expanduser() / ".local" / "state"
    return base / "tooloo" / "stacks"


def sign_in(paths: StatePaths, config: Path | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Records this process as the supervisor of `paths`; None when the registry cannot be written
    (`tooloo ls` then misses this stack, which is no reason for the stack not to run)."""
    entry = registry_dir(environ) / f"{os.getpid()}.json"
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(entry, json.dumps({"stateDir": str(paths.root.resolve()), "pid": os.getpid(),
                                         "config": None if config is None else str(config)}) + "\n")
    except OSError:
        return None
    return entry


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
    """Whether the recorded pid is still the supervisor of the recorded directory (not a pid reused
    since): the directory's own pid file names it."""
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's: not this user's stack
        return False
    try:
        return int((Path(record["stateDir"]) / StatePaths(Path(record["stateDir"])).pid_file.name).read_text()) \
            == record["pid"]
    except (OSError, ValueError):
        return False
