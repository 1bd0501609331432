"""A service's own routes on plain Starlette: the "bare Starlette route" of `bench http`.

    python -m tooloo_cli.bench.bare --config tooloo.toml --port 4101 training

The service's routes, exception handlers and lifespan, in a Starlette app of their own:
Starlette's router, and none of tooloo's middleware. Everything else is the service as the
supervisor runs it (the same command-line arguments, `serve()`, uvicorn settings and
connection guard), so a route measured here and on the real service differs by what tooloo
puts around the routes (access log, tracing, limiting, its indexed router): what a service
costs over writing it on plain Starlette, which `bench http` reports as the share of the
bare route's req/s a service keeps.
"""

from __future__ import annotations

import sys

from starlette.applications import Starlette
from starlette.types import ASGIApp

from tooloo_cli.stack import Replica, ServiceSpec

SERVICES_MODULE = ("-m", "tooloo_cli.services")


def plain_starlette(app: ASGIApp) -> Starlette:
    """The service's routes, handlers and lifespan in a plain Starlette app.

    The service's own Starlette app is found under the middleware (each pure-ASGI layer keeps
    what it wraps as `.app`).
    """
    while not isinstance(app, Starlette):
        app = app.app  # type: ignore[attr-defined]
    return Starlette(routes=app.routes, exception_handlers=app.exception_handlers,
                     lifespan=app.router.lifespan_context)


def command(spec: ServiceSpec, replica: Replica) -> tuple[str, ...]:
    """The replica's own command line, run through this module instead of `tooloo_cli.services`."""
    argv = spec.argv(replica)
    if argv[1:3] != SERVICES_MODULE:
        raise ValueError(f"{spec.name} is not one of tooloo's services: it has no bare router")
    return (argv[0], "-m", __name__, *argv[3:])


if __name__ == "__main__":
    from tooloo_cli.services.__main__ import main

    sys.exit(main(served=plain_starlette))
