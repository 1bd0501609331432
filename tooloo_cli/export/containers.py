"""How the stack runs in containers, one service per container: what `k8s` and `compose` both export.

    containers = Containers.of(Declaration.of(load_config()))
    containers.host("budget")              # "budget": its name in the cluster (k8s Service, compose service)
    containers.command(spec)               # ("python", "-m", "tooloo_cli.services", "--config",
                                           #  "/etc/tooloo/tooloo.toml", "--port", "3003", "budget")
    containers.environment(spec)           # Environment(plain={...}, secret=("OPENAI_API_KEY",))
    containers.config                      # the tooloo.toml every container reads, at CONFIG_PATH
    check_command(spec.readiness, "127.0.0.1", 3003)   # ["tooloo-probe", "127.0.0.1", "3003", "/ready"]
    image_files()                          # [File("Dockerfile", …), File("Dockerfile.dockerignore", …)]

Contract: everything here is derived from the declaration (`declaration.stack.specs` and
`declaration.loaded`), never from a list of its own, and is the same for every
orchestrator, so that a k8s and a compose export of one tooloo.toml run the same stack:

- Each service is reached by its name (`_` made `-`, since the name is a host name: a
  name that still is none is a UsageError), on its declared port, in a container of its
  own: every replica of it listens on that one port, and the orchestrator's Service (k8s)
  or network alias (compose) balances between them.
- The containers' tooloo.toml is the loaded configuration (TOOLOO_* overrides of the
  exporting shell included) with stack.host and, per service, `bind` "0.0.0.0" (reached
  from other containers), `url` its in-cluster address, `replicas = 1` (the orchestrator
  runs the copies: each process is one service behind one address), no `env`, `env_file`
  or `cwd` (the orchestrator sets the environment; host paths mean nothing in an image),
  and state under STATE_DIR (a volume). It never holds a secret: a password in
  [stack] redis_url is shown as *** and the real URL reaches tooloo's services as
  TOOLOO_STACK__REDIS_URL, from a secret.
- A service's command is its spec's argv: tooloo's own run the image's `python` with the
  containers' configuration; a command of the user's own runs as declared, its program
  found on the image's PATH (a host directory such as /usr/bin means nothing there).
- [stack] redis_url pointing at a declared service (by its name, or by the host and port
  it is declared on) makes that service the stack's Redis, run in REDIS_IMAGE with its
  declared options but those of the host (--port, --bind, --dir: it listens on all
  addresses of its container, in REDIS_DATA), and the URL names it in the cluster; the
  URL's password reaches it from a secret (REDIS_PASSWORD, a `Reference` in its command);
  a Redis elsewhere keeps its URL as it is. A state file outside the state directory
  is refused (UsageError): only that directory is a volume.
- The `env` table's values are written as they are (`$` doubled: both orchestrators
  expand `$`). A secret (a variable some service names in `spec.secrets`: the provider's
  API key; the Redis URL with a password) and every variable of an env_file are only
  ever referred to by name: the file may hold what a manifest anyone reads must not.
- The image (`image_files`) is python:3.12-slim with tooloo and its redis and otlp extras
  installed from the checkout it is built in, run as its own user (USER_ID), with PROBE,
  the supervisor's probe in the standard library, for healthchecks and init containers.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from tooloo_cli.config import config_to_dict, is_loopback
from tooloo_cli.config.loader import ENV_PREFIX, redacted_url
from tooloo_cli.errors import UsageError
from tooloo_cli.export.base import File, state_files
from tooloo_cli.stack import read_env_file

if TYPE_CHECKING:
    from tooloo_cli.export.base import Declaration
    from tooloo_cli.stack import Probe, ServiceSpec

DEFAULT_IMAGE = "tooloo:latest"
REDIS_IMAGE = "redis:7"
CONFIG_DIR = "/etc/tooloo"
CONFIG_PATH = f"{CONFIG_DIR}/tooloo.toml"
STATE_DIR = "/var/lib/tooloo"
BIND = "0.0.0.0"
PYTHON = "python"  # the interpreter on the image's PATH (python:*-slim)
USER_ID = 10001  # the image's own user: no service runs as root; a volume is made writable for it
# The supervisor's probes give a service 1 s to answer (stack/probes.py PROBE_TIMEOUT).
PROBE_TIMEOUT_SECONDS = 1
# Where the Redis URL's password reaches tooloo's services instead of the configuration file, and the
# stack's Redis its own (--requirepass), both from a secret.
REDIS_URL_VARIABLE = f"{ENV_PREFIX}STACK__REDIS_URL"
REDIS_PASSWORD_VARIABLE = "REDIS_PASSWORD"
REDIS_DATA = "/data"  # redis:7's working directory and volume
_DEFAULT_REDIS_PORT = 6379

# A probe as the supervisor asks it (GET path → 200, or a TCP connect), with nothing but the
# standard library, installed in the image as PROBE: a compose healthcheck runs it once; a k8s
# init container, with --wait, until a dependency passes. http.client, not urllib: no proxy from
# the environment, no redirect followed.
PROBE = "tooloo-probe"
PROBE_SCRIPT = """\
#!/usr/bin/env python3
import http.client, socket, sys, time
host, port, path, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:] == ["--wait"]
while True:
    try:
        if path:
            connection = http.client.HTTPConnection(host, port, timeout=1)
            connection.request("GET", path)
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                sys.exit(0)
            problem = f"GET {path} answered {status}"
        else:
            socket.create_connection((host, port), timeout=1).close()
            sys.exit(0)
    except OSError as exc:
        problem = str(exc)
    if not wait:
        sys.exit(f"{host}:{port}: {problem}")
    time.sleep(1)
"""

# docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest].
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(rf"(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::[\w][\w.-]{{0,127}})?"
                    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
# A DNS-1035 label: a k8s Service's name, and a host name every resolver takes.
_HOST = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def check_image(image: str) -> str:
    """`image` when it is an image reference, else UsageError naming --image."""
    matched = _IMAGE.fullmatch(image)
    if matched is None or len(matched["name"]) > 255:  # docker's limit on a repository's name
        raise UsageError(f"--image {image!r} is not an image reference: [registry/]name[:tag][@digest], "
                         f"lower-case name (e.g. {DEFAULT_IMAGE}, registry.example.com/tooloo:1.0)")
    return image


def literal(text: str) -> str:
    """`text` as both orchestrators pass it on: k8s expands $(VAR) and compose ${VAR}; `$$` is one `$`."""
    return text.replace("$", "$$")


def check_command(probe: Probe, host: str, port: int, *, wait: bool = False) -> list[str]:
    """A command, run in tooloo's image, that passes when `probe` (http or tcp) passes at host:port."""
    return [PROBE, host, str(port), probe.path or "", *(["--wait"] if wait else [])]


@dataclass(frozen=True)
class Environment:
    plain: dict[str, str]  # written as they are (their `$` still to be made literal): its `env` table's
    secret: tuple[str, ...]  # only named: the orchestrator takes their values from a secret
    file: Path | None = None  # its env_file, read where the orchestrator runs, never copied into the export
    from_file: tuple[str, ...] = ()  # the variables of `secret` that the file gives


@dataclass(frozen=True)
class Reference:
    """A variable's value in a command, which each orchestrator writes its own way ($(NAME), ${NAME})."""

    name: str


@dataclass(frozen=True)
class Containers:
    """The declaration as containers run it (see the module's contract)."""

    declaration: Declaration
    hosts: dict[str, str]  # service name → its host name in the cluster
    redis_service: str | None  # the declared service [stack] redis_url points at, if one is
    redis_url: str  # [stack] redis_url as the containers reach it (with its password, if any)

    @classmethod
    def of(cls, declaration: Declaration) -> Containers:
        """UsageError for a service whose name cannot be a host name, or two that would share one."""
        hosts: dict[str, str] = {}
        for name in declaration.stack.specs:
            host = name.replace("_", "-")
            if not _HOST.fullmatch(host):
                raise UsageError(f"services.{name}: {host!r} cannot be a host name in a cluster (letters, digits "
                                 "and '-', ending with a letter or digit); rename the service")
            if host in hosts.values():
                other = next(key for key, value in hosts.items() if value == host)
                raise UsageError(f"services.{name} and services.{other} would both be {host!r} in a cluster "
                                 "('_' becomes '-'); rename one of them")
            hosts[name] = host
        redis_url = declaration.loaded.config.stack.redis_url
        redis_service = _redis_service(declaration, redis_url)
        if redis_service is not None:
            redis_url = _with_host(redis_url, hosts[redis_service])
        return cls(declaration, hosts, redis_service, redis_url)

    def origin(self) -> str:
        """What the export was written from, for its comments."""
        loaded = self.declaration.loaded
        origin = loaded.source.name if loaded.source is not None else "tooloo's built-in defaults"
        # The exporting shell's TOOLOO_* overrides are in the export: say so, as they are in no file.
        return origin + (f" with {', '.join(loaded.overrides)}" if loaded.overrides else "")

    def host(self, name: str) -> str:
        return self.hosts[name]

    def url(self, spec: ServiceSpec) -> str | None:
        """Where siblings reach `spec`'s replicas from their containers, or None when it has no port."""
        return None if spec.port is None else f"http://{self.hosts[spec.name]}:{spec.port}"

    def image(self, spec: ServiceSpec, image: str) -> str:
        """The image `spec` runs in: the stack's Redis in REDIS_IMAGE, every other service in `image`."""
        return REDIS_IMAGE if spec.name == self.redis_service else image

    def command(self, spec: ServiceSpec) -> tuple[str | Reference, ...]:
        """What a container of `spec` runs: its argv, on the image's interpreter and the containers' config."""
        program, *arguments = spec.argv(spec.replicas[0])  # every replica serves the one declared port
        if spec.name == self.redis_service:
            # Its options as declared but those that hold for this host only: a loopback --bind would refuse
            # the siblings, a host --dir is not in the image, and a --requirepass would write the password
            # itself into the manifests (it comes from a secret instead).
            kept = [part for option in _options(arguments) if option[0] not in _REDIS_HOST_OPTIONS
                    for part in option]
            redis = ["redis-server", *kept, "--port", str(spec.port), "--bind", BIND, "--dir", REDIS_DATA]
            return (*redis, "--requirepass", Reference(REDIS_PASSWORD_VARIABLE)) if self._redis_password() else \
                (*redis, "--protected-mode", "no")  # no password: reachable from the other containers all the same
        if not spec.builtin:
            return (PurePosixPath(program).name, *arguments)
        if "--config" in arguments:  # the host's file is not in the container: CONFIG_PATH is
            at = arguments.index("--config")
            del arguments[at:at + 2]
        # arguments[:2] is `-m tooloo_cli.services`; the options and the name follow.
        return (PYTHON, *arguments[:2], "--config", CONFIG_PATH, *arguments[2:])

    def secret_variables(self) -> tuple[str, ...]:
        """Every variable the export only refers to by name, in the stack's order."""
        names = [secret for spec in self.declaration.stack.specs.values() for secret in spec.secrets]
        names += [key for keys in self._from_files.values() for key in keys]
        if self._redis_password():
            names.append(REDIS_URL_VARIABLE)
            if self.redis_service is not None:
                names.append(REDIS_PASSWORD_VARIABLE)
        return tuple(dict.fromkeys(names))

    def environment(self, spec: ServiceSpec) -> Environment:
        """`spec`'s variables as `up` gives them (its env_file, then its env), and its secrets by name.

        As `up` does, a service gets the secrets it names, and any it sets in its own env or
        env_file; tooloo's own get the Redis URL when it carries a password.
        """
        withheld = self.secret_variables()
        variables = spec.environment()
        named = [*spec.secrets, *(key for key in variables if key in withheld)]
        if spec.builtin and self._redis_password():
            named.append(REDIS_URL_VARIABLE)
        if spec.name == self.redis_service and self._redis_password():
            named.append(REDIS_PASSWORD_VARIABLE)
        return Environment({key: value for key, value in variables.items() if key not in withheld},
                           tuple(dict.fromkeys(named)), spec.env_file, self._from_files[spec.name])

    @cached_property
    def config(self) -> str:
        """The tooloo.toml every container of tooloo's own reads at CONFIG_PATH (see the contract)."""
        import tomli_w

        loaded = self.declaration.loaded
        for spec in self.declaration.stack.specs.values():
            for path in state_files(spec, "a container")[1]:
                raise UsageError(f"services.{spec.name}: {path} is an absolute path: in a container only the "
                                 f"state directory ({STATE_DIR}, a volume) is kept; name the file within "
                                 "[stack] state_dir (cache.db, data/x.db)")
        data = config_to_dict(loaded.config)
        data["stack"]["host"] = BIND
        data["stack"]["state_dir"] = STATE_DIR
        shown_url = redacted_url(self.redis_url) if self._redis_password() else self.redis_url
        data["stack"]["redis_url"] = shown_url
        for name, table in data["services"].items():
            spec = self.declaration.stack.specs[name]
            for key in ("env", "env_file", "cwd", "url"):
                table.pop(key, None)
            table["bind"] = BIND
            table["replicas"] = 1
            if name == self.redis_service:  # what its container runs, its password not written
                table["command"] = [part if isinstance(part, str) else "***" for part in self.command(spec)]
            if (url := self.url(spec)) is not None:
                table["url"] = url
        lines = [f"# The tooloo.toml of the containers, written from {self.origin()} by `tooloo export`: export again",
                 "# when that changes. Each service listens on 0.0.0.0 in its own container and reaches its",
                 "# siblings by their names; the orchestrator runs the replicas and sets the environment."]
        if self._redis_password():
            lines.append(f"# stack.redis_url's password is not here: {REDIS_URL_VARIABLE} (a secret) holds the "
                         f"whole URL, {shown_url}.")
        return "\n".join(lines) + "\n\n" + tomli_w.dumps(data)

    @cached_property
    def config_digest(self) -> str:
        """A digest of `config`: a pod template carrying it is rolled when the configuration changes."""
        return hashlib.sha256(self.config.encode()).hexdigest()

    @cached_property
    def _from_files(self) -> dict[str, tuple[str, ...]]:
        """Per service, the variables it takes from its env_file (and not from its `env` table): named,
        never copied, as the file may hold what a manifest anyone reads must not. Each file read once."""
        return {name: () if spec.env_file is None else
                tuple(key for key in read_env_file(spec.env_file) if key not in spec.env)
                for name, spec in self.declaration.stack.specs.items()}

    def _redis_password(self) -> bool:
        return bool(self.redis_url) and redacted_url(self.redis_url) != self.redis_url


_REDIS_HOST_OPTIONS = frozenset({"--port", "--bind", "--dir", "--requirepass", "--protected-mode"})


def _options(arguments: list[str]) -> list[list[str]]:
    """redis-server's arguments as options, each `--name` with the values up to the next (a config file first)."""
    options: list[list[str]] = []
    for argument in arguments:
        if argument.startswith("--") or not options:
            options.append([argument])
        else:
            options[-1].append(argument)
    return options


def _redis_service(declaration: Declaration, url: str) -> str | None:
    """The declared service `url` (a redis:// URL) points at: by its name, or by its declared host and port."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname is None:  # rediss (TLS) and unix sockets: not redis:7 as is
        return None
    port = parts.port or _DEFAULT_REDIS_PORT
    for spec in declaration.stack.specs.values():
        if spec.builtin or spec.port != port or spec.url is None:
            continue
        declared = urlsplit(spec.url).hostname or ""
        if parts.hostname in (spec.name, declared) or (is_loopback(parts.hostname) and is_loopback(declared)):
            return spec.name
    return None


def _with_host(url: str, host: str) -> str:
    """`url` naming `host` instead of its own, keeping its credentials, port, database and options."""
    parts = urlsplit(url)
    credentials, at, _ = parts.netloc.rpartition("@")
    netloc = f"{credentials}{at}{host}:{parts.port or _DEFAULT_REDIS_PORT}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_DOCKERFILE = f"""\
# syntax=docker/dockerfile:1
# The image of the tooloo stack, one service per container: `tooloo export k8s` and `tooloo export
# compose` start each container with its service's command and mount the containers' tooloo.toml
# at {CONFIG_PATH}. Build it from the tooloo checkout (the directory holding pyproject.toml),
# naming this file; Dockerfile.dockerignore beside it keeps .venv and .tooloo out of the context:
#   docker build -f deploy/Dockerfile -t {DEFAULT_IMAGE} .
FROM python:3.12-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/tooloo
COPY pyproject.toml README.md ./
COPY tooloo_cli ./tooloo_cli
# With the redis and otlp extras, the one image runs any tooloo.toml (redis_url, otlp_endpoint).
RUN pip install ".[redis,otlp]"
# The state files ({STATE_DIR}: a volume) belong to this user; no service runs as root.
RUN groupadd --system --gid {USER_ID} tooloo \\
    && useradd --system --uid {USER_ID} --gid tooloo --home-dir {STATE_DIR} --create-home \\
       --shell /usr/sbin/nologin tooloo
# The probe of the healthchecks and of the init containers that wait for a dependency.
COPY --chmod=755 <<"PROBE" /usr/local/bin/{PROBE}
{PROBE_SCRIPT}PROBE
USER {USER_ID}:{USER_ID}
CMD ["{PYTHON}", "-m", "tooloo_cli.services", "--help"]
"""

_DOCKERIGNORE = """\
# The build context of Dockerfile is the tooloo checkout: only what the image installs goes in
# (BuildKit reads this file for the Dockerfile beside it).
*
!pyproject.toml
!README.md
!tooloo_cli
**/__pycache__
"""


def image_files() -> list[File]:
    """The Dockerfile of the image every tooloo container runs, and the ignore file of its build context."""
    return [File("Dockerfile", _DOCKERFILE), File("Dockerfile.dockerignore", _DOCKERIGNORE)]
