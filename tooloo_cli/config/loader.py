"""Reading, validating and writing `tooloo.toml`.

Where the file comes from: `--config PATH`, else `$TOOLOO_CONFIG`, else the nearest
`tooloo.toml` in the working directory or above it (as docker compose finds its file),
else the built-in defaults. Environment variables `TOOLOO_<SECTION>__<KEY>` override
single settings, with `__` between the parts of the key's path:

    TOOLOO_SERVICES__BUDGET__CACHE__TTL_SECONDS=10 tooloo config show

    config = load_config()                  # or load_config("ops/tooloo.toml")
    config.services["web"].port             # 3000
    config.state_path("budget.db")          # <dir of tooloo.toml>/.tooloo/budget.db

Every problem raises ConfigError with a message naming the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tooloo_cli.config.schema import SERVICE_MODULES, Config, command_service
from tooloo_cli.errors import UsageError

FILE_NAME = "tooloo.toml"
ENV_PREFIX = "TOOLOO_"
ENV_CONFIG = "TOOLOO_CONFIG"
STATE_DIR_VARIABLE = f"{ENV_PREFIX}STACK__STATE_DIR"  # stack.state_dir, read before the file parses


class ConfigError(UsageError):
    """The configuration cannot be used; the message says where and why (exit 2)."""


@dataclass
class LoadedConfig:
    """A validated Config with where it came from."""

    config: Config
    source: Path | None = None  # the file read, None for built-in defaults
    base_dir: Path = field(default_factory=Path.cwd)  # relative paths resolve against it
    overrides: list[str] = field(default_factory=list)  # environment variables applied
    lenient: bool = False  # the file could not be used: these are the defaults (load_config_leniently)

    @property
    def services(self) -> dict[str, Any]:
        return self.config.services

    def state_path(self, name: str = "") -> Path:
        """A path inside the state directory (`.tooloo/` beside tooloo.toml by default)."""
        state = Path(self.config.stack.state_dir)
        base = state if state.is_absolute() else self.base_dir / state
        return base / name if name else base


# -- finding and reading --------------------------------------------------------------


def find_config_file(explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
                     cwd: Path | None = None) -> Path | None:
    """The file to read, or None when there is none and the defaults apply."""
    env = os.environ if env is None else env
    chosen = explicit or env.get(ENV_CONFIG)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_absolute():  # anchored now: the supervisor and the services run in the file's directory
            path = (cwd or Path.cwd()) / path
        if not path.is_file():
            origin = "--config" if explicit else ENV_CONFIG
            raise ConfigError(f"{path}: no such configuration file (from {origin})")
        return path
    here = (cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> LoadedConfig:
    """The effective configuration: defaults, then the file, then environment overrides."""
    env = os.environ if env is None else env
    source = find_config_file(path, env, cwd)
    config = Config.defaults()
    file_origin = None
    if source is not None:
        try:
            text = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
        file_origin = _FileOrigin(source, text)
        _apply_document(config, data, file_origin)
    overrides = _apply_environment(config, env)
    _check_consistency(config, file_origin, overrides)
    base_dir = source.parent.resolve() if source is not None else (cwd or Path.cwd()).resolve()
    return LoadedConfig(config, source, base_dir, list(overrides.values()))


# -- where a problem is -----------------------------------------------------------------


class _FileOrigin:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def where(self, key_path: list[str]) -> str:
        line = _line_of(self.lines, key_path)
        return f"{self.path}, line {line}" if line else str(self.path)


class _EnvOrigin:
    def __init__(self, variable: str, raw: str) -> None:
        self.variable = variable
        self.raw = raw

    def where(self, key_path: list[str]) -> str:
        return f"environment variable {self.variable}"


def _line_of(lines: list[str], key_path: list[str]) -> int | None:
    """The line defining `key_path` (as a key or a table header), found by a light scan."""
    table: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            table = [part.strip().strip('"') for part in line.strip("[]").split(".")]
            if table == key_path:
                return number
        elif "=" in line:
            key = [part.strip().strip('"') for part in line.split("=", 1)[0].split(".")]
            if table + key == key_path:
                return number
    return None


def _nearest(name: str, valid: typing.Iterable[str]) -> str:
    import difflib

    valid = sorted(valid)
    close = [key for key in valid if key.startswith(name) or name.startswith(key)]
    close = close or difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(valid)}"


# -- applying values ------------------------------------------------------------------


_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


def _apply_document(config: Config, data: dict[str, Any], origin: _FileOrigin | _EnvOrigin) -> None:
    for key, value in data.items():
        if key == "services":
            if not isinstance(value, dict):
                raise ConfigError(f"{origin.where(['services'])}: services must be a table")
            for name, table in value.items():
                if name not in config.services:
                    config.services[name] = _new_service(name, table, origin)
                elif isinstance(table, dict) and "command" in table and name in SERVICE_MODULES:
                    raise ConfigError(
                        f"{origin.where(['services', name, 'command'])}: {name} is one of tooloo's own services "
                        f"and runs `tooloo serve {name}`; to run a command of your own, give it another name "
                        f"([services.my-{name}])")
                _apply_section(config.services[name], table, ["services", name], origin)
        elif key in ("stack", "supervisor", "observe"):
            _apply_section(getattr(config, key), value, [key], origin)
        else:
            valid = ["stack", "supervisor", "observe", "services"]
            raise ConfigError(f"{origin.where([key])}: unknown section {key!r}{_nearest(key, valid)}")


def _new_service(name: str, table: Any, origin: _FileOrigin | _EnvOrigin) -> Any:
    """A service of the user's own: a table with a `command` (anything else is a typo of ours)."""
    where = origin.where(["services", name])
    if not isinstance(table, dict) or "command" not in table:
        known = ", ".join(SERVICE_MODULES)
        close = _nearest(name, SERVICE_MODULES)
        hint = close if "did you mean" in close else f"; tooloo's services are {known}"
        raise ConfigError(f"{where}: unknown service {name!r}{hint}, and it has no `command` to run it as a "
                          "service of your own")
    if not _SERVICE_NAME.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} cannot name a service: use lower-case letters, digits, '-' and '_' "
                          "(at most 40, starting with a letter)")
    return command_service([])


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A settings class's field types, evaluated once (the annotations are strings)."""
    return typing.get_type_hints(cls)


def _unwrapped(annotation: Any) -> Any:
    """`X` of `X | None` (a setting that may be left unset); any other annotation as it is."""
    if isinstance(annotation, types.UnionType):
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def _section_type(annotation: Any) -> type | None:
    """The settings dataclass behind `X` or `X | None`, or None for a plain value."""
    annotation = _unwrapped(annotation)
    return annotation if dataclasses.is_dataclass(annotation) else None


def _apply_section(section: Any, data: Any, key_path: list[str], origin: _FileOrigin | _EnvOrigin) -> None:
    dotted = ".".join(key_path)
    if not isinstance(data, dict):
        raise ConfigError(f"{origin.where(key_path)}: {dotted} must be a table")
    hints = _hints(type(section))
    fields = {f.name: f for f in dataclasses.fields(section)}
    for key, value in data.items():
        path = [*key_path, key]
        if key not in fields:
            raise ConfigError(f"{origin.where(path)}: unknown key {'.'.join(path)}{_nearest(key, fields)}")
        if _section_type(hints[key]) is not None:
            current = getattr(section, key)
            if current is None:
                service = key_path[-1]
                if service not in SERVICE_MODULES:
                    raise ConfigError(f"{origin.where(path)}: {service} runs a command of its own, which embeds "
                                      f"no {key.replace('_', ' ')}: only tooloo's services have modules")
                embeds = ", ".join(("tracer", *SERVICE_MODULES[service]))
                raise ConfigError(
                    f"{origin.where(path)}: the {service} service has no {key.replace('_', ' ')} "
                    f"(it embeds: {embeds})"
                )
            _apply_section(current, value, path, origin)
        else:
            setattr(section, key, _coerce(value, hints[key], fields[key].metadata, path, origin))


def _coerce(value: Any, annotation: Any, limits: Mapping[str, Any], path: list[str],
            origin: _FileOrigin | _EnvOrigin) -> Any:
    dotted = ".".join(path)

    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{origin.where(path)}: {dotted} must be {expected}, got {value!r}")

    annotation = _unwrapped(annotation)

    if annotation is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("a whole number")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        value = float(value)
    elif annotation is str:
        if isinstance(origin, _EnvOrigin):
            value = origin.raw  # a text setting takes the variable's text as it is ("4" stays "4")
        if not isinstance(value, str):
            raise fail("a string")
    elif typing.get_origin(annotation) is list:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise fail("a list of strings")
    elif typing.get_origin(annotation) is dict:
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise fail("a table of strings (KEY = \"value\")")
    bounds = [
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
    ]
    for name, holds, symbol in bounds:
        bound = limits.get(name)
        if bound is not None and not holds(value, bound):
            raise fail(f"{symbol} {bound}")
    choices = limits.get("choices")
    if choices and value not in choices:
        raise fail(f"one of {', '.join(choices)}")
    return value


def _apply_environment(config: Config, env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Applies `TOOLOO_<SECTION>__<KEY>=value` variables; returns key path → variable applied."""
    applied = {}
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX) or "__" not in variable:
            continue
        parts = variable[len(ENV_PREFIX):].lower().split("__")
        document: dict[str, Any] = {}
        cursor = document
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = _parse_env_value(env[variable])
        _apply_document(config, document, _EnvOrigin(variable, env[variable]))
        applied[tuple(parts)] = variable
    return applied


def _parse_env_value(raw: str) -> Any:
    """A TOML value (`10`, `0.5`, `true`, `["10.0.0.1"]`), else the text itself."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def _check_consistency(config: Config, origin: _FileOrigin | None, overrides: dict[tuple[str, ...], str]) -> None:
    def where(*paths: list[str]) -> str:
        """The environment variable that set one of `paths`, else the file's line of the first."""
        for path in paths:
            if tuple(path) in overrides:
                return f"environment variable {overrides[tuple(path)]}"
        return origin.where(paths[0]) if origin else "configuration"

    ports: dict[int, str] = {}
    for name, service in config.services.items():
        key = ["services", name]
        if service.is_command:
            _check_command_service(name, service, where)
        elif service.port == 0:
            raise ConfigError(f"{where([*key, 'port'])}: services.{name}.port must be a port (1-65535)")
        else:
            for own in ("cwd", "health_path", "ready_path"):
                if getattr(service, own) is not None:
                    raise ConfigError(f"{where([*key, own])}: services.{name}.{own} is for a service of your own "
                                      f"(a `command`); {name} is tooloo's, with its own /health and /ready")
        initial = service.backoff_initial or config.supervisor.backoff_initial
        longest = service.backoff_max or config.supervisor.backoff_max
        overridden = service.backoff_initial is not None or service.backoff_max is not None
        if overridden and initial > longest:  # [supervisor]'s own pair is checked below
            raise ConfigError(f"{where([*key, 'backoff_initial'], [*key, 'backoff_max'])}: services.{name} would "
                              f"back off {initial:g} s at first but {longest:g} s at most; backoff_initial must not "
                              "exceed backoff_max")
        if service.port == 0:
            continue
        if service.port + service.replicas - 1 > 65535:
            raise ConfigError(f"{where([*key, 'replicas'])}: services.{name} needs ports {service.port} to "
                              f"{service.port + service.replicas - 1} for its {service.replicas} replicas")
        for port in range(service.port, service.port + service.replicas):
            if port in ports:
                other = ports[port]
                held = f"the port of {other}" if other != name else "taken twice"
                raise ConfigError(
                    f"{where([*key, 'port'], [*key, 'replicas'], ['services', other, 'port'])}: services.{name} "
                    f"{'replica ports' if service.replicas > 1 else 'port'} {port} is already {held}"
                    + (" (a service with N replicas listens on port, port+1, ..., port+N-1)"
                       if service.replicas > 1 or config.services[other].replicas > 1 else ""))
            ports[port] = name
        pool = service.pool
        if pool is not None and pool.min_size > pool.max_size:
            raise ConfigError(
                f"{where(['services', name, 'pool', 'min_size'], ['services', name, 'pool', 'max_size'])}: "
                f"services.{name}.pool.min_size "
                f"({pool.min_size}) must not exceed max_size ({pool.max_size})"
            )
    for name, service in config.services.items():
        _check_reachability(name, service, where)
    _check_dependencies(config, where)
    supervisor = config.supervisor
    if supervisor.backoff_initial > supervisor.backoff_max:
        raise ConfigError(
            f"{where(['supervisor', 'backoff_initial'], ['supervisor', 'backoff_max'])}: supervisor.backoff_initial "
            f"({supervisor.backoff_initial}) must not exceed backoff_max ({supervisor.backoff_max})"
        )
    if supervisor.metrics_port in ports:
        holder = ports[supervisor.metrics_port]
        raise ConfigError(f"{where(['supervisor', 'metrics_port'], ['services', holder, 'port'])}: "
                          f"supervisor.metrics_port {supervisor.metrics_port} is already the port of {holder}")
    import ipaddress

    host_problem = address_problem(config.stack.host)
    if host_problem:
        raise ConfigError(f"{where(['stack', 'host'])}: stack.host {config.stack.host!r} {host_problem}")
    for name, service in config.services.items():
        provider = service.provider
        if provider is None:
            continue
        key_path = ["services", name, "provider"]
        problem = _base_url_problem(provider.base_url)
        if problem:
            raise ConfigError(f"{where([*key_path, 'base_url'])}: services.{name}.provider.base_url "
                              f"{provider.base_url!r} {problem}")
        if not _ENV_NAME.fullmatch(provider.api_key_env):
            raise ConfigError(f"{where([*key_path, 'api_key_env'])}: services.{name}.provider.api_key_env "
                              f"{provider.api_key_env!r} is not an environment variable name")
    for proxy in config.stack.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"{where(['stack', 'trusted_proxies'])}: stack.trusted_proxies has {proxy!r}, "
                "which is not an IP address or network"
            ) from None
    if config.stack.redis_url and (problem := redis_url_problem(config.stack.redis_url)):
        # Never the URL itself in the message: it may hold the server's password.
        raise ConfigError(f"{where(['stack', 'redis_url'])}: stack.redis_url {problem}")
    if config.stack.otlp_endpoint and (problem := otlp_endpoint_problem(config.stack.otlp_endpoint)):
        raise ConfigError(f"{where(['stack', 'otlp_endpoint'])}: stack.otlp_endpoint {problem}")


def redacted_url(url: str) -> str:
    """`url` with its password (user info, or a `password=` query) replaced by ***: for showing."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = "&".join(f"{pair.partition('=')[0]}=***" if pair.partition("=")[0] == "password" else pair
                         for pair in parts.query.split("&")) if parts.query else ""
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "***"  # not a URL: nothing of it is shown


def shown(config: Config) -> Config:
    """`config` as `tooloo config show` prints it: the Redis URL without its password."""
    if not config.stack.redis_url:
        return config
    return dataclasses.replace(config, stack=dataclasses.replace(config.stack,
                                                                 redis_url=redacted_url(config.stack.redis_url)))


def redis_url_problem(url: str) -> str | None:
    """Why `url` is not a Redis URL tooloo can use, or None (said without repeating the URL)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL (redis://host:6379/0, rediss://…, or unix:///path/redis.sock)"
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            return "names no host (redis://host:6379/0)"
        if port == 0:
            return "has port 0"
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            return "has a path that is not a database number (redis://host:6379/0)"
        return None
    if parts.scheme == "unix":
        return None if parts.path else "names no socket path (unix:///path/redis.sock)"
    return f"has the scheme {parts.scheme!r}: use redis://, rediss:// or unix://"


def otlp_endpoint_problem(url: str) -> str | None:
    """Why `url` is not an OTLP/HTTP collector URL tooloo can send to, or None (said without repeating
    the URL). Credentials belong in OTEL_EXPORTER_OTLP_HEADERS, never in the URL, which is shown."""
    parts = _split_url(url)
    if parts is None:
        return "is not a URL (http://host:4318, https://host:4318/prefix)"
    if parts.scheme not in ("http", "https"):
        return f"has the scheme {parts.scheme!r}: OTLP/HTTP is http:// or https://"
    if not parts.hostname:
        return "names no host (http://host:4318)"
    if parts.port == 0:
        return "has port 0"
    if parts.username is not None or parts.password is not None:
        return "holds credentials: put them in OTEL_EXPORTER_OTLP_HEADERS (e.g. authorization=Bearer%20…)"
    if parts.query or parts.fragment:
        return "has a query or a fragment: a collector URL has neither"
    return None


def _check_command_service(name: str, service: Any, where: Callable[..., str]) -> None:
    key = ["services", name]
    if not service.command or not service.command[0]:
        raise ConfigError(f"{where([*key, 'command'])}: services.{name}.command must name a program, "
                          'e.g. command = ["redis-server", "--port", "6390"]')
    for probe in ("health_path", "ready_path"):
        path = getattr(service, probe)
        if path is None:
            continue
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ConfigError(f"{where([*key, probe])}: services.{name}.{probe} must be a path such as /health")
        if service.port == 0:
            raise ConfigError(f"{where([*key, probe])}: services.{name}.{probe} needs services.{name}.port, "
                              "the port to probe it on")
    if service.replicas > 1 and service.port != 0:
        raise ConfigError(f"{where([*key, 'replicas'])}: services.{name} runs one command, which can listen on "
                          "one port: replicas > 1 is only for a command that listens on none (port = 0)")


def _check_reachability(name: str, service: Any, where: Callable[..., str]) -> None:
    key = ["services", name]
    if service.bind is not None and (problem := address_problem(service.bind)):
        raise ConfigError(f"{where([*key, 'bind'])}: services.{name}.bind {service.bind!r} {problem}")
    if service.url is not None:
        problem = _url_problem(service.url)
        if problem is None and service.port == 0:
            problem = f"is set, but the service has no port (services.{name}.port)"
        if problem:
            raise ConfigError(f"{where([*key, 'url'])}: services.{name}.url {service.url!r} {problem}")
    for variable in service.env or {}:
        if not _ENV_NAME.fullmatch(variable):
            raise ConfigError(f"{where([*key, 'env'])}: services.{name}.env has {variable!r}, which is not an "
                              "environment variable name")


def _split_url(url: str) -> Any:
    """`url`'s parts (a urllib SplitResult), or None when it is not a URL (a port that is no number, say)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return None
    return parts


def _url_problem(url: str) -> str | None:
    """Why a service's advertised URL cannot be dialled (None when it is http://host[:port])."""
    parts = _split_url(url)
    if parts is None:
        return "is not a URL"
    if parts.scheme != "http" or not parts.hostname:
        return "must be an http:// URL with a host (the services speak plain HTTP to each other)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must name only a scheme, a host and a port, no path"
    return address_problem(parts.hostname)


def _check_dependencies(config: Config, where: Callable[..., str]) -> None:
    """Every `depends_on` names a service of this stack, and following them never comes back round."""
    for name, service in config.services.items():
        for dependency in service.depends_on:
            if dependency == name:
                raise ConfigError(f"{where(['services', name, 'depends_on'])}: services.{name} depends on itself")
            if dependency not in config.services:
                raise ConfigError(f"{where(['services', name, 'depends_on'])}: services.{name}.depends_on names "
                                  f"{dependency!r}, which is no service of this stack"
                                  f"{_nearest(dependency, config.services)}")
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name):], name])
            raise ConfigError(f"{where(['services', path[-1], 'depends_on'])}: the dependencies go round in a "
                              f"circle ({cycle}); no order can start them")
        if name in done:
            return
        for dependency in config.services[name].depends_on:
            visit(dependency, [*path, name])
        done.add(name)

    for name in config.services:
        visit(name, [])


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def address_problem(host: str) -> str | None:
    """Why `host` cannot be bound or dialled (None when it is an IP address or a valid host name)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return "is neither an IP address nor a host name"
    return None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _base_url_problem(url: str) -> str | None:
    """Why the provider's URL is unusable or unsafe: the API key travels with every request."""
    parts = _split_url(url)
    if parts is None:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return ("would send the API key in cleartext: use https:// (http:// is accepted only for a "
                "loopback address such as a local proxy)")
    return None


# -- when the file is broken ---------------------------------------------------------------------


def load_config_leniently(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                          cwd: Path | None = None) -> tuple[LoadedConfig, str | None]:
    """The configuration, or, when the file cannot be used, enough of it to reach a running stack.

    `status`, `logs` and `down` must not be locked out of a stack by a typo made after it
    started: they fall back to the built-in defaults beside the file, with the file's
    `state_dir` when it can still be read, and return the problem as a warning.
    """
    try:
        return load_config(path, env=env, cwd=cwd), None
    except ConfigError as exc:
        source = find_config_file(path, env, cwd)  # raises again only when the file is missing
        if source is None:
            raise
        problem = str(exc)
    loaded = LoadedConfig(Config.defaults(), source, source.parent.resolve(), lenient=True)
    env = os.environ if env is None else env
    state_dir = env.get(STATE_DIR_VARIABLE) or _state_dir_of(source)
    if state_dir is not None:
        loaded.config.stack.state_dir = state_dir
    return loaded, problem


def _state_dir_of(source: Path) -> str | None:
    """`stack.state_dir` read from a file that may not parse: its [stack] table, line by line."""
    try:
        lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    table = None
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            table = line.strip("[] ")
        elif table == "stack" and line.startswith("state_dir"):
            try:
                value = tomllib.loads(line).get("state_dir")
            except tomllib.TOMLDecodeError:
                return None
            return value if isinstance(value, str) else None
    return None


# -- writing --------------------------------------------------------------------------


def config_to_dict(config: Config) -> dict[str, Any]:
    """The configuration as TOML-ready data; modules a service lacks are left out."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if item is not None}
        return value

    return strip(dataclasses.asdict(config))


def config_to_toml(config: Config) -> str:
    import tomli_w

    header = "# tooloo.toml: the whole stack. `tooloo config show` prints the effective values.\n\n"
    return header + tomli_w.dumps(config_to_dict(config))


def config_to_json(config: Config) -> str:
    return json.dumps(config_to_dict(config), indent=2)
