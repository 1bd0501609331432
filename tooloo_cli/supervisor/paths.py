"""Where the supervisor keeps its state: `.tooloo/` beside tooloo.toml (mode 0700).

    paths = StatePaths.of(load_config())
    paths.socket, paths.pid_file, paths.log("budget")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tooloo_cli.config import LoadedConfig


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

    def log(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def ensure(self) -> None:
        """Creates the state and log directories, readable by their owner only."""
        for directory in (self.root, self.root / "logs"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o700)
