"""The eight TooLoo services, one module each, built on `service.Service`.

    app = create_app("budget", load_config())     # an ASGI app, run by `tooloo serve budget`

Modules are imported only when their service is built, so a process pays for one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tooloo_cli.config import LoadedConfig



def create_app(name: str, loaded: LoadedConfig, access_log: TextIO | None = None, port: int | None = None) -> ASGIApp:
    """The ASGI app of service `name` (one of the eight: `tooloo_cli.config.BUILTIN_SERVICES`), serving `port`
    (default: its configured port; a replica's is another)."""
    from tooloo_cli.config import BUILTIN_SERVICES
    from tooloo_cli.services.service import Service

    if name not in BUILTIN_SERVICES:
        raise ValueError(f"unknown service {name!r}; tooloo's services are {', '.join(BUILTIN_SERVICES)}")

    module = importlib.import_module(f"tooloo_cli.services.{name}")
    service = Service(name, loaded, access_log, port)
    app = module.create(service)
    service.preflight()  # after create(): the module may have declared how its data is kept
    return app
