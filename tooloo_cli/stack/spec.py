"""What a service is, derived once from the configuration: `ServiceSpec`.

    stack = stack_of(load_config())
    spec = stack.specs["budget"]
    spec.argv(spec.replicas[0])      # ("/usr/bin/python3", "-m", "tooloo_cli.services", ..., "budget")
    spec.liveness, spec.readiness    # Probe("http", "/health"), Probe("http", "/ready")
    stack.urls("budget")             # ("http://127.0.0.1:3003",): where siblings reach each replica
    stack.start_order()              # dependencies first

Contract: everything that starts, probes, calls, exports or shows a service reads its
spec (the supervisor, the gateway and the other callers, observe, bench), and nothing
else decides those facts. A spec is immutable; reading the configuration again makes new
ones. A service of the user's own (`command = [...]`) is probed over HTTP when it gives
a path, by a TCP connect when it gives only a port, and is alive while its process is.

A service with `replicas = N` runs N processes on `port`, `port + 1`, …; one replica is
named as its service, several as `budget.1`, `budget.2`, … (their logs `budget.1.log`…).
Deriving a spec raises ConfigError (exit 2) for what the configuration alone cannot say
is wrong: a service that cannot run as several processes asked for replicas (coach can,
given [stack] redis_url: its replicas elect a leader), an `env_file` that cannot be read.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tooloo_cli.config import SERVICE_MODULES, ConfigError, LoadedConfig, secret_variables
from tooloo_cli.config.schema import SUPERVISOR_OVERRIDES
from tooloo_cli.errors import UsageError
from tooloo_cli.stack.topology import ROLES, callees

# How a built-in service exits when it must not be restarted as things are: `tooloo serve` turns
# the UsageError of a service that cannot start (a corrupt ledger, say) into its exit code.
REFUSED_TO_START = UsageError.exit_code

# The header a service that passes its readiness probe but runs degraded (Redis away: a fallback
# answers) says why in; the supervisor's probe reads it for `tooloo status`.
DEGRADED_HEADER = "X-Tooloo-Degraded"
# Where tooloo's services, and the supervisor on [supervisor] metrics_port, serve Prometheus' page;
# the supervisor's only on loopback, whatever stack.host says. The exporters' scrape configurations
# point there.
METRICS_PATH = "/metrics"
# The probes of tooloo's own services: liveness (the process answers) and readiness (what it needs answers).
LIVENESS_PATH = "/health"
READINESS_PATH = "/ready"
SUPERVISOR_METRICS_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Probe:
    """How to ask whether a process is alive or ready: `http` GET path → 200, `tcp` connect, or `process` alive."""

    kind: str
    path: str | None = None

    def describe(self) -> str:
        return {"http": f"GET {self.path}", "tcp": "a TCP connect", "process": "its process running"}[self.kind]


@dataclass(frozen=True)
class RestartPolicy:
    """When an exited process is started again, after how long, and when to give up on it."""

    restart: str  # always, on-failure, no
    backoff_initial: float
    backoff_max: float
    backoff_reset_after: float
    crash_loop_limit: int
    crash_loop_window: float
    refusal_exit_code: int | None = None  # an exit that means "do not restart me" (built-in services)


@dataclass(frozen=True)
class Replica:
    service: str
    index: int  # 1-based
    name: str  # the service's name, or `service.index` when it has several
    port: int | None
    url: str | None  # how siblings reach this replica


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    builtin: bool  # one of tooloo's eight (serves /health, /ready and the observability document)
    command: tuple[str, ...]  # without the replica's port (see argv)
    cwd: Path
    bind: str
    port: int | None
    url: str | None
    replicas: tuple[Replica, ...]
    env: Mapping[str, str]  # its `env` table
    env_file: Path | None
    secrets: tuple[str, ...]  # variables it alone may receive (the provider's API key)
    liveness: Probe
    readiness: Probe
    probe_interval: float  # between probes once it is up
    liveness_failures: int  # failed liveness probes in a row that restart it
    startup_timeout: float
    grace_period: float
    depends_on: tuple[str, ...]
    restart: RestartPolicy
    state_files: tuple[Path, ...]
    state_names: tuple[str, ...]  # the same files as tooloo.toml names them: within the state directory, or absolute
    calls: tuple[str, ...]  # the services it calls
    single_process: str | None  # why it must run as one process as configured (None: it may run as several)

    def argv(self, replica: Replica) -> tuple[str, ...]:
        """The command line of one replica (a built-in service is told the port it serves)."""
        if self.builtin and replica.port is not None:
            return (*self.command[:-1], "--port", str(replica.port), self.command[-1])
        return self.command

    def environment(self) -> dict[str, str]:
        """Its own variables: the `env_file`'s, then the `env` table's (ConfigError when the file is unusable)."""
        variables = read_env_file(self.env_file) if self.env_file is not None else {}
        variables.update(self.env)
        return variables

    def replica(self, name: str) -> Replica:
        return next(replica for replica in self.replicas if replica.name == name)


@dataclass(frozen=True)
class Stack:
    """Every service's spec, in the configuration's order."""

    specs: Mapping[str, ServiceSpec]

    def replicas(self, names: list[str] | None = None) -> list[Replica]:
        """The replicas of `names` (service or replica names; all when None, none when empty), in the stack's order."""
        wanted = set(names) if names is not None else None
        return [replica for spec in self.specs.values() for replica in spec.replicas
                if wanted is None or spec.name in wanted or replica.name in wanted]

    def names(self) -> list[str]:
        """What a command may be given: every service's name, and every replica's of a service with several."""
        return [*self.specs, *(replica.name for replica in self.replicas() if replica.name not in self.specs)]

    def urls(self, name: str) -> tuple[str, ...]:
        """Where each replica of service `name` is reached."""
        return tuple(replica.url for replica in self.specs[name].replicas if replica.url is not None)

    def with_dependencies(self, names: list[str]) -> list[str]:
        """`names` and everything they depend on, in start order (docker compose starts those too)."""
        wanted: set[str] = set()

        def add(name: str) -> None:
            if name not in wanted:
                wanted.add(name)
                for dependency in self.specs[name].depends_on:
                    add(dependency)

        for name in names:
            add(name)
        return [name for name in self.start_order() if name in wanted]

    def start_order(self) -> list[str]:
        """Every service after the ones it depends on; otherwise in the configuration's order."""
        ordered: list[str] = []

        def visit(name: str) -> None:
            if name not in ordered:
                for dependency in self.specs[name].depends_on:
                    visit(dependency)
                ordered.append(name)

        for name in self.specs:
            visit(name)
        return ordered

    def stop_waves(self, names: list[str]) -> list[list[str]]:
        """`names` in groups to stop one after another: dependents before what they depend on."""
        depth: dict[str, int] = {}
        for name in self.start_order():
            depth[name] = 1 + max((depth[d] for d in self.specs[name].depends_on), default=-1)
        levels = sorted({depth[name] for name in names}, reverse=True)
        return [[name for name in names if depth[name] == level] for level in levels]


def stack_of(loaded: LoadedConfig) -> Stack:
    """The specs of every service in `loaded` (ConfigError for what the config alone cannot catch)."""
    return Stack({name: _spec(loaded, name, settings) for name, settings in loaded.services.items()})


def _spec(loaded: LoadedConfig, name: str, settings: Any) -> ServiceSpec:
    config = loaded.config
    builtin = name in SERVICE_MODULES
    role = ROLES.get(name)
    single_process = None if role is None or (role.scales_with_redis and config.stack.redis_url) \
        else role.single_process
    if single_process and settings.replicas > 1:
        assert role is not None
        where = loaded.source or "configuration"
        remedy = ("; set [stack] redis_url to run it as several (one leads, the others stand by)"
                  if role.scales_with_redis else "")
        raise ConfigError(f"{where}: services.{name}.replicas = {settings.replicas}, but {name} runs as one "
                          f"process only: {single_process}{remedy}")
    bind = settings.bind or config.stack.host
    port = settings.port or None
    # Siblings dial where it listens: its own bind address (a wildcard one on loopback), else stack.host.
    url = settings.url or (_url(probe_host(bind), port) if port is not None else None)
    replicas = tuple(
        Replica(name, index, name if settings.replicas == 1 else f"{name}.{index}",
                None if port is None else port + index - 1,
                None if url is None else _with_port(url, index - 1))
        for index in range(1, settings.replicas + 1))
    supervisor = config.supervisor
    overridden = {key: getattr(settings, key) if getattr(settings, key) is not None else getattr(supervisor, key)
                  for key in SUPERVISOR_OVERRIDES}
    policy = RestartPolicy(settings.restart, overridden["backoff_initial"], overridden["backoff_max"],
                           overridden["backoff_reset_after"], overridden["crash_loop_limit"],
                           overridden["crash_loop_window"], REFUSED_TO_START if builtin else None)
    if builtin:
        command: tuple[str, ...] = (sys.executable, "-m", "tooloo_cli.services")
        if loaded.source is not None:
            command += ("--config", str(loaded.source))
        command += (name,)
        liveness, readiness = Probe("http", LIVENESS_PATH), Probe("http", READINESS_PATH)
        state_names = tuple(file for file in (
            settings.cache.file if settings.cache else None, settings.pool.database if settings.pool else None) if file)
    else:
        command = tuple(settings.command)
        fallback = Probe("tcp") if port is not None else Probe("process")
        liveness = Probe("http", settings.health_path) if settings.health_path else fallback
        readiness = Probe("http", settings.ready_path) if settings.ready_path else liveness
        state_names = ()
    cwd = loaded.base_dir / settings.cwd if settings.cwd else loaded.base_dir
    env_file = loaded.base_dir / settings.env_file if settings.env_file else None
    return ServiceSpec(
        name=name, builtin=builtin, command=command, cwd=cwd, bind=bind, port=port, url=url, replicas=replicas,
        env=dict(settings.env or {}), env_file=env_file, secrets=secret_variables(settings),
        liveness=liveness, readiness=readiness, probe_interval=supervisor.health_interval,
        liveness_failures=supervisor.liveness_failures, startup_timeout=overridden["startup_timeout"],
        grace_period=overridden["grace_period"], depends_on=tuple(settings.depends_on), restart=policy,
        state_files=tuple(loaded.state_path(name) for name in state_names), state_names=state_names, calls=callees(name), single_process=single_process,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _with_port(url: str, offset: int) -> str:
    """`url` with its port moved on by `offset` (the URL of the offset-th next replica)."""
    if offset == 0:
        return url.rstrip("/")
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return urlunsplit((parts.scheme, f"{host}:{(parts.port or 80) + offset}", "", "", ""))


def read_env_file(path: Path) -> dict[str, str]:
    """Variables from a dotenv file: `KEY=value`, `export KEY=value`, quotes, `#` comments, blank lines.

    Double-quoted values understand \\n, \\t, \\" and \\\\; single-quoted ones are taken as written;
    unquoted ones end at ` #`. ConfigError, naming the line, for anything else.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read this env_file: {getattr(exc, 'strerror', None) or exc}") from None
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, separator, value = line.partition("=")
        key = key.strip()
        if not separator or not key.isidentifier() or not key.isascii():
            raise ConfigError(f"{path}, line {number}: expected KEY=value, got {raw.strip()[:60]!r}")
        variables[key] = _env_value(value.strip(), path, number)
    return variables


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _env_value(value: str, path: Path, number: int) -> str:
    if value[:1] not in ("'", '"'):
        comment = value.find(" #")
        return (value[:comment] if comment >= 0 else value).strip()
    quote, out, index = value[0], [], 1
    while index < len(value) and value[index] != quote:
        char = value[index]
        if quote == '"' and char == "\\" and value[index + 1:index + 2] in _ESCAPES:
            out.append(_ESCAPES[value[index + 1]])
            index += 2
        else:
            out.append(char)
            index += 1
    if index >= len(value):
        raise ConfigError(f"{path}, line {number}: the value's {quote} is never closed")
    rest = value[index + 1:].strip()
    if rest and not rest.startswith("#"):
        raise ConfigError(f"{path}, line {number}: unexpected text after the quoted value: {rest[:40]!r}")
    return "".join(out)


def probe_host(bind: str) -> str:
    """Where to dial a process that listens on `bind` (a wildcard address is dialled on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)

