"""web (3000): the API gateway. Routes /api/* to the owning service through a breaker each.

    GET  /api/v1/system/status          every service's health in one document
    ANY  /api/v1/training/*             → training          /api/v4/meta-learning/*  → meta
    ANY  /api/v1/providers/*, /api/v1/budget*  → budget     /api/v1/auto-coach/*     → coach
    ANY  /api/v1/segmentation/*         → segmentation      /api/v1/reports/*        → reports
    ANY  /api/v1/capabilities/*         → capabilities

All of /api is rate limited per client (1000 tokens, 100/s by default) and traced; the
trace context travels on to the owning service. An upstream whose breaker is open is
answered 503 at once, naming the breaker.

The gateway passes a request on as it came: the raw path and query (still percent-encoded)
and the raw bytes of the headers it forwards, with the peer appended to X-Forwarded-For.
What cannot be passed on is the client's defect (400), never a failure of the upstream.
The upstream's own X-RateLimit-* and Retry-After headers reach the client (a 429 from
budget describes budget's limit, not the gateway's).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, asked_locally, ok, read_body
from tooloo_cli.services.service import UNAVAILABLE, Service, build_app

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
_FORWARDED_REQUEST = frozenset({b"accept", b"content-type", b"user-agent", b"authorization"})
_DROPPED_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                               b"content-encoding", b"date", b"server", b"traceparent"})
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
        scope = request.scope
        headers = [(name, value) for name, value in scope["headers"] if name in _FORWARDED_REQUEST]
        peer = (request.client.host if request.client else "unknown").encode()
        forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        headers.append((b"x-forwarded-for", b", ".join([*forwarded, peer])))
        query = scope["query_string"]
        raw_target = (scope.get("raw_path") or path.encode()) + (b"?" + query if query else b"")
        upstream = await service.upstream.request(target, request.method, raw_target, content=body, headers=headers)
        response = Response(upstream.content, upstream.status_code)
        # Raw bytes both ways: a header is passed on exactly as the upstream wrote it.
        response.raw_headers += [(name.lower(), value) for name, value in upstream.headers.raw
                                 if name.lower() not in _DROPPED_RESPONSE]
        return response

    async def system_status(request: Request) -> Response:
        detail = asked_locally(request.scope)
        probes = await asyncio.gather(*(_probe(service, name, detail) for name in service.loaded.services
                                        if name != "web"))
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


async def _probe(service: Service, name: str, detail: bool) -> tuple[str, dict[str, Any]]:
    """One sibling's /health (through Upstream.probe: not the breaker) with how long it took."""
    started = time.perf_counter()
    document, error = await service.upstream.probe(name)
    if error is not None and not detail:
        error = UNAVAILABLE
    entry = {"status": "up" if error is None else "down", "port": service.loaded.services[name].port,
             "latencyMs": round((time.perf_counter() - started) * 1000, 2), "error": error, **_health_fields(document)}
    return name, entry
