"""web (3000): the API gateway. Routes /api/* to the owning service through a breaker each.

    GET  /api/v1/system/status          every service's health in one document
    ANY  /api/v1/training/*             → training          /api/v4/meta-learning/*  → meta
    ANY  /api/v1/providers/*, /api/v1/budget*  → budget     /api/v1/auto-coach/*     → coach
    ANY  /api/v1/segmentation/*         → segmentation      /api/v1/reports/*        → reports
    ANY  /api/v1/capabilities/*         → capabilities

All of /api is rate limited per client (1000 tokens, 100/s by default) and traced; the
trace context travels on to the owning service. An upstream whose breaker is open is
answered 503 at once, naming the breaker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, ok, read_body
from tooloo_cli.services.service import Service, build_app

ROUTES = (
    ("/api/v1/training/", "training"),
    ("/api/v4/meta-learning/", "meta"),
    ("/api/v1/providers/", "budget"),
    ("/api/v1/budget", "budget"),
    ("/api/v1/auto-coach/", "coach"),
    ("/api/v1/segmentation/", "segmentation"),
    ("/api/v1/reports/", "reports"),
    ("/api/v1/capabilities/", "capabilities"),
)
UPSTREAMS = tuple(dict.fromkeys(target for _, target in ROUTES))
# Request headers worth passing on; hop-by-hop ones and Host belong to this connection only.
_FORWARDED_REQUEST = ("accept", "content-type", "user-agent", "authorization")
_DROPPED_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                     "date", "server", "traceparent"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def owner_of(path: str) -> str | None:
    """The service that owns an /api path, or None."""
    for prefix, target in ROUTES:
        if path.startswith(prefix):
            return target
    return None


def create(service: Service) -> ASGIApp:
    for target in UPSTREAMS:
        service.breaker(target)  # listed in the observability document from the start

    async def proxy(request: Request) -> Response:
        path = request.url.path
        target = owner_of(path)
        if target is None:
            raise ApiError(404, f"not found: {request.method} {path}")
        body = await read_body(request, service.stack.max_body_bytes)
        headers = {name: request.headers[name] for name in _FORWARDED_REQUEST if name in request.headers}
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{forwarded}, {peer}" if forwarded else peer
        query = f"?{request.url.query}" if request.url.query else ""
        upstream = await service.upstream.request(target, request.method, path + query, content=body, headers=headers)
        passed = {name: value for name, value in upstream.headers.items()
                  if name not in _DROPPED_RESPONSE and not name.startswith("x-ratelimit-")}
        return Response(upstream.content, upstream.status_code, headers=passed)

    async def system_status(request: Request) -> Response:
        probes = await asyncio.gather(*(_probe(service, name) for name in service.loaded.services if name != "web"))
        services: dict[str, Any] = {"web": {"status": "up", "port": service.settings.port, "latencyMs": 0.0,
                                            "error": None, **_health_fields(service.health())}}
        services.update(dict(probes))
        for name, entry in services.items():
            breaker = service.breakers.get(name)
            entry["breaker"] = breaker.state if breaker else None
        return ok({"healthy": all(entry["status"] == "up" for entry in services.values()), "services": services},
                  request)

    return build_app(service, [
        Route("/api/v1/system/status", system_status),
        Route("/api/{path:path}", proxy, methods=_METHODS),
    ], limit_api=True)


def _health_fields(document: dict[str, Any]) -> dict[str, Any]:
    return {"pid": document.get("pid"), "uptime": document.get("uptime"), "version": document.get("version")}


async def _probe(service: Service, name: str) -> tuple[str, dict[str, Any]]:
    """One sibling's /health (through Upstream.probe: not the breaker) with how long it took."""
    started = time.perf_counter()
    document, error = await service.upstream.probe(name)
    entry = {"status": "up" if error is None else "down", "port": service.loaded.services[name].port,
             "latencyMs": round((time.perf_counter() - started) * 1000, 2), "error": error, **_health_fields(document)}
    return name, entry
