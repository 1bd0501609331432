"""A service's Starlette app: Starlette's router with an index in front, and one error layer, not two.

    app = ServiceApp(routes, lifespan=lifespan)
    ServiceMiddleware(app, ...)        # always around it: it answers what the app does not

ServiceApp is Starlette with the layers it puts around the router replaced, each a cost of
every request (~3 µs of a small route here, with their Request, closures and send wrappers):

- Starlette's ServerErrorMiddleware is left out: ServiceMiddleware, around every service's
  app, already logs an unexpected exception and answers it with a JSON 500 (or, when the
  answer had begun, ends there).
- Its ExceptionMiddleware is replaced by a try around the router. A route's own errors are
  answered inside the route, by Starlette's `request_response`, with the handlers this
  hands it (EXCEPTION_HANDLERS, as ExceptionMiddleware would hand them), which raises on
  what they do not handle. So what the try handles was raised by the router before any
  route answered (404, 405), answered by the same handlers (services/http.py's
  answer_error); everything else goes on up to ServiceMiddleware. That holds because every
  route is a Route of a function endpoint (refused otherwise): a raw ASGI endpoint or a
  Mount could raise a handled error after it began to answer, and be answered twice.
- IndexedRouter, Starlette's router with an index in front: a path without parameters goes
  to its route at once.

Starlette tries the routes in the order declared, building a match for each, until one
fits: a service's own route, declared after the shared /health, /ready, /dependencies and
observability routes, was reached after half a dozen regex matches (~10 % of a small
route's cost). Here a request whose path is exactly one declared without parameters, with
a method the route takes, is handed to it from a dict. The answer is the one the scan
would give: a path is indexed only when no route declared before it could match it too,
and everything else (other methods and their 405, parameters, mounts, a root path,
redirects of a trailing slash, lifespan) is the scan's, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from tooloo_cli.services.http import EXCEPTION_HANDLERS, answer_error


class ServiceApp(Starlette):
    """Starlette over `routes` (each a Route of a function endpoint), answering errors with EXCEPTION_HANDLERS."""

    def __init__(self, routes: Sequence[BaseRoute], *, lifespan: Any = None) -> None:
        for route in routes:
            if not isinstance(route, Route) or route.app is route.endpoint:  # Starlette runs those as raw ASGI
                raise TypeError(f"{route!r}: a service's routes are Routes of function endpoints (see the module)")
        super().__init__(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
        self.router = IndexedRouter(routes, lifespan=lifespan)
        # What Starlette's ExceptionMiddleware hands the routes: (handlers by class, by status code).
        self._route_handlers = (EXCEPTION_HANDLERS, {})

    def add_middleware(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a service's middleware is ServiceMiddleware, around the app (services/service.py)")

    def add_exception_handler(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a service's error handlers are services/http.py's EXCEPTION_HANDLERS")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if scope["type"] != "http":  # the lifespan (uvicorn serves no websocket: ws="none")
            await self.router(scope, receive, send)
            return
        scope["starlette.exception_handlers"] = self._route_handlers
        try:
            await self.router(scope, receive, send)
        except Exception as exc:  # answered when the router raised it (see the module), else raised on
            await answer_error(exc, scope, receive, send)


class IndexedRouter(Router):
    def __init__(self, routes: Sequence[BaseRoute], *, lifespan: Any = None) -> None:
        super().__init__(routes, lifespan=lifespan)
        self.indexed: dict[str, Route] = {}
        for position, route in enumerate(self.routes):
            if not isinstance(route, Route) or route.param_convertors or route.path in self.indexed:
                continue  # with parameters, or shadowed by the same path declared before
            if all(_cannot_match(earlier, route.path) for earlier in self.routes[:position]):
                self.indexed[route.path] = route

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.indexed.get(scope["path"])
            if route is not None and (route.methods is None or scope["method"] in route.methods):
                # What the scan would set for this route's full match.
                scope.setdefault("router", self)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)


def _cannot_match(route: BaseRoute, path: str) -> bool:
    """Whether `route` surely matches no request for `path` (what it cannot tell, it may match)."""
    if isinstance(route, (Route, Mount)):
        return route.path_regex.match(path) is None
    return False
