"""What each service's process finds in its environment, and what a command hands the supervisor.

    handed = handover(loaded, os.environ)     # the CLI: {"config": "/srv/tooloo.toml", "environment": {...}}
    env = service_environment(loaded, "budget", os.environ, handed["environment"])

Contract:

- A command (`up`, `restart`) hands over the configuration file it read and its TOOLOO_*
  settings with every start, so the supervisor starts each service from the
  configuration as it is *now*: a port changed in tooloo.toml or a TOOLOO_* override
  applies to what that command starts, and nothing sticks from an earlier `up`.
- The detached supervisor runs with neither TOOLOO_* settings nor secrets in its own
  environment (`scrubbed`); secrets reach it only in the handover, over a pipe.
- A service gets the scrubbed environment, the handed TOOLOO_* settings (its own reading
  of the configuration must agree with the supervisor's) and only the secrets it needs
  (`secret_variables`: budget gets the provider's API key; the other seven never see it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tooloo_cli.config import LoadedConfig, secret_variables
from tooloo_cli.config.loader import ENV_CONFIG, ENV_PREFIX


def _settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The TOOLOO_* settings in `environ`; TOOLOO_CONFIG is handed over as the file's path instead."""
    return {key: value for key, value in environ.items() if key.startswith(ENV_PREFIX) and key != ENV_CONFIG}


def _secrets(loaded: LoadedConfig) -> set[str]:
    return {name for settings in loaded.services.values() for name in secret_variables(settings)}


def scrubbed(environ: Mapping[str, str], loaded: LoadedConfig) -> dict[str, str]:
    """`environ` without TOOLOO_* settings and without any service's secrets."""
    secrets = _secrets(loaded)
    return {key: value for key, value in environ.items()
            if not key.startswith(ENV_PREFIX) and key not in secrets}


def handover(loaded: LoadedConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """What a command gives the supervisor with a start: its configuration file, settings and secrets."""
    handed = _settings(environ)
    handed.update({name: environ[name] for name in _secrets(loaded) if name in environ})
    return {"config": str(loaded.source) if loaded.source is not None else None, "environment": handed}


def service_environment(loaded: LoadedConfig, name: str, base: Mapping[str, str],
                        handed: Mapping[str, str]) -> dict[str, str]:
    """The environment of service `name`'s process (see the module's contract)."""
    environment = scrubbed(base, loaded)
    environment.update(_settings(handed))
    environment.update({secret: handed[secret] for secret in secret_variables(loaded.services[name])
                        if secret in handed})
    return environment
