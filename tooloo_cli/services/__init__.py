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

SERVICE_NAMES = ("web", "training", "meta", "budget", "coach", "segmentation", "reports", "capabilities")


def create_app(name: str, loaded: LoadedConfig, access_log: TextIO | None = None) -> ASGIApp:
    """The ASGI app of service `name` (one of SERVICE_NAMES)."""
    if name not in SERVICE_NAMES:
        raise ValueError(f"unknown service {name!r}; the services are {', '.join(SERVICE_NAMES)}")
    from tooloo_cli.services.service import Service

    module = importlib.import_module(f"tooloo_cli.services.{name}")
    service = Service(name, loaded, access_log)
    app = module.create(service)
    service.preflight()  # after create(): the module may have declared how its data is kept
    return app
