"""Configuration of the stack: `tooloo.toml`, environment overrides, validation.

    from tooloo_cli.config import load_config
    loaded = load_config()
    loaded.config.services["budget"].rate_limiter.capacity   # 100
"""

from tooloo_cli.config.loader import (
    ConfigError,
    LoadedConfig,
    config_to_dict,
    config_to_json,
    config_to_toml,
    find_config_file,
    is_loopback,
    load_config,
    load_config_leniently,
)
from tooloo_cli.config.schema import (
    BUILTIN_SERVICES,
    SERVICE_MODULES,
    Config,
    ServiceSettings,
    command_service,
    secret_variables,
)

__all__ = [
    "BUILTIN_SERVICES",
    "SERVICE_MODULES",
    "Config",
    "ConfigError",
    "LoadedConfig",
    "ServiceSettings",
    "command_service",
    "config_to_dict",
    "config_to_json",
    "config_to_toml",
    "find_config_file",
    "is_loopback",
    "load_config",
    "load_config_leniently",
    "secret_variables",
]
