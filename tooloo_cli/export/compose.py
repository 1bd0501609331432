"""`tooloo export compose`: the stack as a compose-spec file, one service per declared service.

    tooloo export compose --out deploy/ && docker build -f deploy/Dockerfile -t tooloo:latest . \\
        && docker compose -f deploy/compose.yaml up -d --wait
    ComposeExporter(image="tooloo:1.0").render(Declaration.of(loaded))   # [File("compose.yaml", …), …]

What it writes: compose.yaml; containers.toml, the containers' tooloo.toml (containers.py:
siblings reached by their compose names, state under /var/lib/tooloo, no secret), given
to each of tooloo's own as /etc/tooloo/tooloo.toml (a compose `config`; not named
tooloo.toml, so that an export into a checkout cannot replace the file it came from);
the Dockerfile of the image and its ignore file (containers.py).

Per service: its image (the stack's Redis, when [stack] redis_url points at a declared
service, in redis:7), its command, `restart` as declared, stop_grace_period from its grace
period, its env table, its env_file as an `env_file` compose reads where it runs (never
copied), a secret such as the provider's API key only by name (compose takes it from the
shell that runs it, as `up` takes it from the shell that starts the stack), a healthcheck from its readiness probe (after its startup timeout, as often as the
supervisor probes), `depends_on` waiting for each dependency to be healthy (started, for
one without a port), a named volume for its state files, `deploy.replicas`, and its ports
published on 127.0.0.1 only: the replicas on the ports `up` gives them (port, port + 1, …),
as one port each inside. The project is named `tooloo`, so its volumes are named alike
wherever the file is.
"""

from __future__ import annotations

from typing import Any

from tooloo_cli.export.base import Declaration, Exporter, File
from tooloo_cli.export.containers import (
    CONFIG_PATH,
    DEFAULT_IMAGE,
    PROBE_TIMEOUT_SECONDS,
    STATE_DIR,
    Containers,
    check_command,
    check_image,
    image_files,
    literal,
)
from tooloo_cli.export.yaml_text import document
from tooloo_cli.stack import ServiceSpec

FILE_NAME = "compose.yaml"
CONFIG_FILE = "containers.toml"
PROJECT = "tooloo"
_CONFIG = "tooloo"  # the compose config holding CONFIG_FILE
_PUBLISHED_ON = "127.0.0.1"


class ComposeExporter(Exporter):
    """compose.yaml, the containers' tooloo.toml, and the Dockerfile of the image they run."""

    def __init__(self, image: str = DEFAULT_IMAGE) -> None:
        self.image = check_image(image)

    def render(self, declaration: Declaration) -> list[File]:
        containers = Containers.of(declaration)
        secrets = containers.secret_variables()
        comments = [f"The tooloo stack as a compose file, written by `tooloo export compose` from "
                    f"{containers.origin()}: export again when it changes.",
                    "Build the image first, in the tooloo checkout (for an export into deploy/):",
                    f"  docker build -f deploy/Dockerfile -t {self.image} .",
                    "  docker compose -f deploy/compose.yaml up -d --wait"]
        if secrets:
            comments.append(f"{', '.join(secrets)}: taken from the services' env_file or from the shell that runs "
                            "docker compose, never written here.")
        return [File(FILE_NAME, document(self._compose(containers), comments)),
                File(CONFIG_FILE, containers.config), *image_files()]

    def _compose(self, containers: Containers) -> dict[str, Any]:
        """The compose file as a dict: `name`, `services` in start order, `volumes`, `configs`."""
        stack = containers.declaration.stack
        services = {containers.host(name): self._service(containers, stack.specs[name])
                    for name in stack.start_order()}
        compose: dict[str, Any] = {"name": PROJECT, "services": services}
        volumes = {_volume(containers, spec): {} for spec in stack.specs.values() if spec.state_files}
        if volumes:
            compose["volumes"] = volumes
        compose["configs"] = {_CONFIG: {"file": f"./{CONFIG_FILE}"}}
        return compose

    def _service(self, containers: Containers, spec: ServiceSpec) -> dict[str, Any]:
        service: dict[str, Any] = {"image": containers.image(spec, self.image),
                                   # ${NAME}: compose puts in the value the shell has (a secret's)
                                   "command": [literal(part) if isinstance(part, str) else f"${{{part.name}}}"
                                               for part in containers.command(spec)],
                                   "restart": spec.restart.restart,
                                   "stop_grace_period": _duration(spec.grace_period)}
        if len(spec.replicas) > 1:
            service["deploy"] = {"replicas": len(spec.replicas)}
        environment = containers.environment(spec)
        if environment.file is not None:  # read by compose where it runs, as `up` reads it: never copied here
            service["env_file"] = [str(environment.file)]
        named = [key for key in environment.secret if key not in environment.from_file]
        if environment.plain or named:
            # A bare name is passed on from the shell, when it is set there: a secret's value is never written.
            service["environment"] = [*(f"{key}={literal(value)}" for key, value in environment.plain.items()),
                                      *named]
        if spec.port is not None:
            ports = [replica.port for replica in spec.replicas if replica.port is not None]
            published = str(ports[0]) if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"
            service["ports"] = [{"target": spec.port, "host_ip": _PUBLISHED_ON, "published": published,
                                 "protocol": "tcp"}]
            if not _unprobed(spec):
                service["healthcheck"] = _healthcheck(containers, spec, spec.port)
        if spec.depends_on:
            specs = containers.declaration.stack.specs
            service["depends_on"] = {containers.host(name): {
                "condition": "service_started" if _unprobed(specs[name]) else "service_healthy"}
                for name in spec.depends_on}
        if spec.builtin:
            service["configs"] = [{"source": _CONFIG, "target": CONFIG_PATH}]
        if spec.state_files:
            service["volumes"] = [{"type": "volume", "source": _volume(containers, spec), "target": STATE_DIR}]
        return service


def _healthcheck(containers: Containers, spec: ServiceSpec, port: int) -> dict[str, Any]:
    """The readiness probe, as `up` waits for it: asked every second until the startup timeout, then every interval."""
    if spec.name == containers.redis_service:  # the Redis image has no Python, but redis-cli
        test = ["CMD", "redis-cli", "-p", str(port), "ping"]
    else:
        test = ["CMD", *check_command(spec.readiness, "127.0.0.1", port)]
    return {"test": test, "interval": _duration(spec.probe_interval), "timeout": f"{PROBE_TIMEOUT_SECONDS}s",
            # One failed probe is unready, as in the supervisor's status.
            "retries": 1, "start_period": _duration(spec.startup_timeout), "start_interval": "1s"}


def _unprobed(spec: ServiceSpec) -> bool:
    """Whether `spec` has no healthcheck (no port to ask): a dependent waits only for it to start."""
    return spec.port is None or spec.readiness.kind == "process"


def _volume(containers: Containers, spec: ServiceSpec) -> str:
    return f"{containers.host(spec.name)}-state"


def _duration(seconds: float) -> str:
    """A compose duration: whole seconds as `5s`, anything else in milliseconds (`200ms`)."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{round(seconds * 1000)}ms"
