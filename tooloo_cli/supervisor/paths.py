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
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
