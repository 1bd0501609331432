"""A private stack for benchmarks and tests: every service on a free port, state in one directory.

    with EphemeralStack(Path(tmp), edit=raise_limits) as stack:
        stack.start("web", "training")
        httpx.get(stack.url("web") + "/health")
        stack.stop("training")            # SIGTERM, and its exit code

Each process is started with `tooloo serve` in its own session and ended by its pid
(SIGTERM, then SIGKILL after the grace period): never by name, never a stray process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tooloo_cli.config import Config, LoadedConfig, config_to_toml, load_config
from tooloo_cli.errors import ToolooError

# Loopback probes go straight to the service, whatever http_proxy says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without TOOLOO_* settings: a private stack reads only its own file."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TOOLOO_")} | extra


def free_port() -> int:
    """A port the OS considers free now (ephemeral: never one of the stack's defaults 3000-3009)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_ephemeral_config(directory: Path, edit: Callable[[Config], None] | None = None) -> Path:
    """A tooloo.toml in `directory` with every service on its own free port (then `edit` applied)."""
    config = Config.defaults()
    ports: set[int] = set()
    for settings in config.services.values():
        while (port := free_port()) in ports:
            pass
        ports.add(port)
        settings.port = port
    if edit is not None:
        edit(config)
    path = directory / "tooloo.toml"
    path.write_text(config_to_toml(config))
    return path


class EphemeralStack:
    def __init__(self, directory: Path, edit: Callable[[Config], None] | None = None,
                 startup_timeout: float = 30.0) -> None:
        self.directory = directory
        self.config_path = write_ephemeral_config(directory, edit)
        self.loaded: LoadedConfig = load_config(self.config_path, env={})
        self.startup_timeout = startup_timeout
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.loaded.services[name].port}"

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, *names: str, env: dict[str, str] | None = None) -> None:
        """Starts the services and returns once each answers /health."""
        base = clean_env()
        for name in names:
            with open(self.log(name), "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "tooloo_cli", "--config", str(self.config_path), "serve", name],
                    stdout=log, stderr=subprocess.STDOUT, env={**base, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        for name in names:
            while not self._healthy(name):
                if self.processes[name].poll() is not None or time.monotonic() > deadline:
                    self.stop_all()
                    raise ToolooError(f"{name} did not start; its log:\n{self.log(name).read_text()[-2000:]}")
                time.sleep(0.02)

    def _healthy(self, name: str) -> bool:
        try:
            with _DIRECT.open(f"{self.url(name)}/health", timeout=0.5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, name: str, grace: float = 10.0) -> int:
        """SIGTERM to the service, SIGKILL after `grace` seconds; its exit code."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def __enter__(self) -> EphemeralStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
