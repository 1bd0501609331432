"""A private stack for benchmarks and tests: every service on a free port, state in one directory.

    with EphemeralStack(Path(tmp), edit=raise_limits) as stack:
        stack.start("web", "training")
        httpx.get(stack.url("web") + "/health")
        stack.stop("training")            # SIGTERM, and its exit code

It is the supervisor's pieces without the supervisor: each replica runs its spec's command
line (`tooloo_cli.stack`) and is waited for with the supervisor's own liveness probe, in
its own session, and is ended by its pid (SIGTERM, then SIGKILL after the grace period):
never by name, never a stray process. Names are services (all their replicas) or replicas.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tooloo_cli.config import Config, LoadedConfig, config_to_toml, load_config
from tooloo_cli.errors import ToolooError
from tooloo_cli.ports import is_free
from tooloo_cli.stack import Replica, ServiceSpec, probe_host, stack_of
from tooloo_cli.supervisor.environment import service_environment
from tooloo_cli.stack.probes import check


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without TOOLOO_* settings: a private stack reads only its own file."""
    return {key: value for key, value in os.environ.items() if not key.startswith("TOOLOO_")} | extra


def free_port() -> int:
    """A port the OS considers free now (ephemeral: never one of the stack's defaults 3000-3009)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Ends a helper process by its pid: SIGTERM, `grace` seconds to go, then SIGKILL; waited for either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spare_port(config: Config) -> int:
    """A free port that no service of `config` (none of its replicas) has: for one more, or for the supervisor's."""
    taken = {port for settings in config.services.values() if settings.port
             for port in range(settings.port, settings.port + settings.replicas)}
    while (port := free_port()) in taken:
        pass
    return port


def room_for_replicas(config: Config, name: str, replicas: int) -> None:
    """Service `name` as `replicas` replicas, on free ports `port` … `port + replicas - 1` that no other
    service of `config` has (a service's replicas listen on consecutive ports)."""
    taken = {settings.port for other, settings in config.services.items() if other != name}
    while True:
        port = free_port()
        wanted = set(range(port, port + replicas))
        if port + replicas - 1 > 65535 or wanted & taken:
            continue
        if all(is_free("127.0.0.1", candidate) for candidate in wanted - {port}):
            break
    config.services[name].port, config.services[name].replicas = port, replicas


def write_ephemeral_config(directory: Path, edit: Callable[[Config], None] | None = None) -> Path:
    """A tooloo.toml in `directory` with every service on its own free port (then `edit` applied)."""
    config = Config.defaults()
    ports: set[int] = set()
    for settings in config.services.values():
        if settings.port == 0:
            continue
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
        """Where service (or replica) `name` is reached: its first replica's URL."""
        replica = stack_of(self.loaded).replicas([name])[0]
        assert replica.url is not None, f"{name} has no URL"
        return replica.url

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, *names: str, env: dict[str, str] | None = None,
              command: Callable[[ServiceSpec, Replica], Sequence[str]] | None = None) -> None:
        """Starts the services (or replicas) and returns once each answers its liveness probe.

        `command` runs a replica under another command line than its spec's (the bench's bare router).
        """
        base = clean_env()
        stack = stack_of(self.loaded)
        started: list[tuple[ServiceSpec, Replica]] = []
        for replica in stack.replicas(list(names)):
            spec = stack.specs[replica.service]
            with open(self.log(replica.name), "ab") as log:
                self.processes[replica.name] = subprocess.Popen(
                    spec.argv(replica) if command is None else command(spec, replica), stdout=log, stderr=subprocess.STDOUT, cwd=spec.cwd,
                    env=service_environment(spec, base, env or {}), start_new_session=True)
            started.append((spec, replica))
        deadline = time.monotonic() + self.startup_timeout
        for spec, replica in started:
            while not self._alive(spec, replica):
                if self.processes[replica.name].poll() is not None or time.monotonic() > deadline:
                    self.stop_all()
                    raise ToolooError(f"{replica.name} did not start; its log:\n"
                                      f"{self.log(replica.name).read_text()[-2000:]}")
                time.sleep(0.02)

    @staticmethod
    def _alive(spec: ServiceSpec, replica: Replica) -> bool:
        return asyncio.run(check(spec.liveness, probe_host(spec.bind), replica.port, timeout=0.5)) is None

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
