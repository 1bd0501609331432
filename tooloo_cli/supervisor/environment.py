"""What each service's process finds in its environment, and what a command hands the supervisor.

    handed = handover(loaded, os.environ)     # the CLI: {"config": "/srv/tooloo.toml", "environment": {...}}
    env = service_environment(stack.specs["budget"], os.environ, handed["environment"])

Contract:

- A command (`up`, `restart`) hands over the configuration file it read and its TOOLOO_*
  settings with every start, so the supervisor starts each service from the
  configuration as it is *now*: a port changed in tooloo.toml or a TOOLOO_* override
  applies to what that command starts, and nothing sticks from an earlier `up`.
- The detached supervisor runs with neither TOOLOO_* settings nor secrets in its own
  environment: only what it passes on and what its interpreter reads
  (`standby.supervisor_environment`); secrets reach it only in the handover, over a pipe.
  `scrubbed` is the command's environment without either, as a configuration is read.
- A service gets only what it needs, not the supervisor's environment: the basics a
  program expects (PATH, HOME, the locale, TMPDIR, the Python path: `PASSED_ON`), the
  handed TOOLOO_* settings when it is one of tooloo's own (its reading of the
  configuration must agree with the supervisor's), its own `env_file` and `env`, and its
  secrets (`secret_variables`: budget gets the provider's API key, with the proxy and CA
  settings its calls out need; no other service ever sees them).
- The OpenTelemetry export variables (`OTLP_VARIABLES`: the collector's endpoint, its headers,
  which may hold credentials, the timeout, the CA file, the service name and resource
  attributes) travel like the TOOLOO_* settings: in the handover, never in the supervisor's
  own environment, and on to each of tooloo's own services, which export their traces
  (services/otlp.py). Given to the whole stack, OTEL_SERVICE_NAME names the group, not each
  service: a service receives it as `service.namespace` in OTEL_RESOURCE_ATTRIBUTES and keeps
  its own name as `service.name` (eight services under one name would be one service to a
  tracing backend); a stack-wide `service.name` in OTEL_RESOURCE_ATTRIBUTES is taken the same
  way. A service's own `env` may set either for it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tooloo_cli.config import LoadedConfig, secret_variables
from tooloo_cli.config.loader import ENV_CONFIG, ENV_PREFIX
from tooloo_cli.config.schema import OTLP_VARIABLES
from tooloo_cli.stack import ServiceSpec
from tooloo_cli.supervisor.standby import NETWORK, PASSED_ON  # there: the standby starts before the configuration

__all__ = ["NETWORK", "PASSED_ON", "handover", "scrubbed", "service_environment"]


def _settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The TOOLOO_<SECTION>__<KEY> settings in `environ` (a secret named TOOLOO_SOMETHING is none of them);
    TOOLOO_CONFIG is handed over as the file's path instead."""
    return {key: value for key, value in environ.items()
            if key.startswith(ENV_PREFIX) and "__" in key and key != ENV_CONFIG}


def _telemetry(environ: Mapping[str, str]) -> dict[str, str]:
    """The OTLP export variables set in `environ`."""
    return {name: environ[name] for name in OTLP_VARIABLES if name in environ}


def _stack_wide(telemetry: Mapping[str, str]) -> dict[str, str]:
    """The OTLP variables handed to the whole stack, as one of its services receives them (see the module)."""
    received = dict(telemetry)
    pairs = [pair for pair in received.pop("OTEL_RESOURCE_ATTRIBUTES", "").split(",") if pair.strip()]
    named = [pair.split("=", 1)[1].strip() for pair in pairs if _key(pair) == "service.name" and "=" in pair]
    pairs = [pair for pair in pairs if _key(pair) != "service.name"]
    # OTEL_SERVICE_NAME wins over the attribute, as the specification has it; the values are percent-encoded.
    name = received.pop("OTEL_SERVICE_NAME", "").strip()
    group = quote(name, safe="", errors="surrogateescape") if name else named[-1] if named else ""
    if group and not any(_key(pair) == "service.namespace" for pair in pairs):
        pairs.append(f"service.namespace={group}")
    if pairs:
        received["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(pairs)
    return received


def _key(pair: str) -> str:
    return pair.split("=", 1)[0].strip()


def _secrets(loaded: LoadedConfig) -> set[str]:
    return {name for settings in loaded.services.values() for name in secret_variables(settings)}


def scrubbed(environ: Mapping[str, str], loaded: LoadedConfig) -> dict[str, str]:
    """`environ` without TOOLOO_* settings and without any service's secrets."""
    secrets = _secrets(loaded)
    return {key: value for key, value in environ.items()
            if not key.startswith(ENV_PREFIX) and key not in secrets}


def handover(loaded: LoadedConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """What a command gives the supervisor with a start: its configuration file, settings, OTLP export
    variables and secrets."""
    handed = _settings(environ) | _telemetry(environ)
    handed.update({name: environ[name] for name in _secrets(loaded) if name in environ})
    return {"config": str(loaded.source) if loaded.source is not None else None, "environment": handed}


def service_environment(spec: ServiceSpec, base: Mapping[str, str], handed: Mapping[str, str]) -> dict[str, str]:
    """The environment of a replica of `spec` (see the module's contract)."""
    environment = {key: value for key, value in base.items() if key in PASSED_ON or key.startswith("LC_")}
    if spec.builtin:
        environment.update(_settings(handed))
        environment.update(_stack_wide(_telemetry(handed)))
    if spec.secrets:
        environment.update({key: value for key, value in base.items() if key in NETWORK})
        environment.update({secret: handed[secret] for secret in spec.secrets if secret in handed})
    environment.update(spec.environment())
    return environment
