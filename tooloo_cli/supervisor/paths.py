"""Where the supervisor keeps its state: `.tooloo/` beside tooloo.toml (mode 0700).

    paths = StatePaths.of(load_config())
    paths.socket, paths.pid_file, paths.log("budget")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import ToolooError


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @classmethod
    def of(cls, loaded: LoadedConfig) -> StatePaths:
        return cls(loaded.state_path())

    @property
    def socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "logs" / "supervisor.log"

    @property
    def supervisor_lock(self) -> Path:
        """Held by the supervisor for its whole life."""
        return self.root / "supervisor.lock"

    @property
    def launch_lock(self) -> Path:
        """Held by `tooloo up` while it decides whether to launch a supervisor."""
        return self.root / "launch.lock"

    @property
    def down_requested(self) -> Path:
        """When the last `tooloo down` ran (epoch seconds): an `up` that began before it gives up."""
        return self.root / "down.requested"

    def log(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def ensure(self) -> None:
        """Creates the state and log directories, 0700, when they do not exist yet.

        An existing directory keeps its mode: `stack.state_dir` may name a directory that
        is not tooloo's to lock down (the socket inside is 0600 either way).
        """
        limit = 107  # sun_path holds 108 bytes with the terminating NUL
        if len(os.fsencode(str(self.socket))) > limit:
            raise ToolooError(f"the control socket {self.socket} is longer than a Unix socket path may be "
                              f"({limit} bytes); set stack.state_dir to a shorter path")
        for directory in (self.root, self.root / "logs"):
            self.check_readable(directory)
            if not directory.is_dir():
                try:
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as exc:
                    raise ToolooError(f"cannot create the state directory {directory}: {exc.strerror}; "
                                      "set stack.state_dir to a directory you can write") from None
            if not os.access(directory, os.W_OK | os.X_OK):
                raise ToolooError(f"the state directory {directory} is not writable{_owner(directory)}; "
                                  "run tooloo as its owner, or set stack.state_dir elsewhere")

    def check_readable(self, directory: Path | None = None) -> None:
        """ToolooError unless `directory` (the root) is absent or a directory this user may enter."""
        directory = directory or self.root
        try:
            exists = directory.exists()
        except PermissionError:  # a parent may not be entered
            raise ToolooError(f"cannot look into {directory.parent}: permission denied{_owner(directory.parent)}") \
                from None
        if exists and not directory.is_dir():
            raise ToolooError(f"the state directory {directory} is a file, not a directory; move it away, or "
                              "set stack.state_dir elsewhere")
        if exists and not os.access(directory, os.R_OK | os.X_OK):
            raise ToolooError(f"the state directory {directory} cannot be read{_owner(directory)}; "
                              "run tooloo as its owner")


def _owner(path: Path) -> str:
    """` (it belongs to alice)` when `path` is another user's, else nothing."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return ""
    if uid == os.getuid():
        return ""
    try:
        import pwd

        return f" (it belongs to {pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f" (it belongs to uid {uid})"


def write_private(path: Path, text: str) -> None:
    """Replaces the file's content; a new file is created 0600 (state files are the owner's only)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
