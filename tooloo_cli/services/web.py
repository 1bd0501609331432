"""web (3000): the API gateway. Routes /api/* to the owning service, a breaker per replica.

    GET  /api/v1/system/status          every service's health in one document, replica by replica
    ANY  /api/v1/training/*             → training          /api/v4/meta-learning/*  → meta
    ANY  /api/v1/providers/*, /api/v1/budget*  → budget     /api/v1/auto-coach/*     → coach
    ANY  /api/v1/segmentation/*         → segmentation      /api/v1/reports/*        → reports
    ANY  /api/v1/capabilities/*         → capabilities

The routes are the stack's topology (`tooloo_cli.stack.topology`); a service with several
replicas gets them round robin, and a replica that is down is skipped (see upstream.py).

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

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tooloo_cli.services.http import ApiError, answer_error, asked_locally, ok, receive_body
from tooloo_cli.services.metrics import ROUTE_KEY
from tooloo_cli.services.service import Service, build_app
from tooloo_cli.stack import route_of

# Request headers worth passing on; hop-by-hop ones and Host belong to this connection only.
_FORWARDED_REQUEST = frozenset({b"accept", b"content-type", b"user-agent", b"authorization"})
_DROPPED_RESPONSE = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                               b"content-encoding", b"date", b"server", b"traceparent"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
_ALLOW = ", ".join(sorted(_METHODS))
_NO_BODY_STATUSES = frozenset({204, 304})


class Proxy:
    """The proxied routes as one pure-ASGI endpoint in front of the router.

    Every request the gateway passes on is the hot path of the whole stack: answering it
    without Starlette's routing, Request and Response objects halves what the gateway spends
    of its own on it. What the proxy does not own (its own routes, an /api path nobody owns)
    goes to the router as before; an error is answered by the same handlers the router uses.
    """

    def __init__(self, service: Service, router: ASGIApp) -> None:
        self.service = service
        self.app = router  # the wrapped app, as every pure-ASGI middleware names it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The gateway's own routes (system status, observability) are owned by no sibling.
        route = route_of(scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        prefix, target = route
        scope[ROUTE_KEY] = prefix + "*"  # what the request metrics count it under: a bounded label
        try:
            await self._pass_on(target, scope, receive, send)
        except Exception as exc:
            await answer_error(exc, scope, receive, send)

    async def _pass_on(self, target: str, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in _METHODS:
            raise ApiError(405, "method not allowed", headers={"Allow": _ALLOW})
        body = await receive_body(scope, receive, self.service.stack.max_body_bytes)
        headers = [(name, value) for name, value in scope["headers"] if name in _FORWARDED_REQUEST]
        client = scope.get("client")
        peer = (client[0] if client else "unknown").encode()
        forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        headers.append((b"x-forwarded-for", b", ".join([*forwarded, peer])))
        query = scope["query_string"]
        raw_target = (scope.get("raw_path") or scope["path"].encode()) + (b"?" + query if query else b"")
        upstream = await self.service.upstream.request(target, method, raw_target, content=body, headers=headers)
        status = upstream.status_code
        # Raw bytes both ways: a header is passed on exactly as the upstream wrote it.
        answer = [(name, value) for name, value in upstream.raw_headers if name not in _DROPPED_RESPONSE]
        content = upstream.content
        if status >= 200 and status not in _NO_BODY_STATUSES:
            answer.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": content})


def create(service: Service) -> ASGIApp:
    def in_front(router: ASGIApp) -> ASGIApp:
        return Proxy(service, router)

    async def not_owned(request: Request) -> Response:
        raise ApiError(404, f"not found: {request.method} {request.url.path}")

    async def system_status(request: Request) -> Response:
        detail = asked_locally(request.scope)
        probed = await service.probe_callees("/health", detail)
        services: dict[str, Any] = {service.name: {
            "status": "up", "port": service.port, "latencyMs": 0.0, "error": None,
            **_health_fields(service.health()), "breaker": None, "replicas": []}}
        for name, replicas in probed.items():
            up = [entry for entry in replicas if entry["status"] == "up"]
            first = up[0] if up else replicas[0]
            services[name] = {
                "status": "up" if len(up) == len(replicas) else "degraded" if up else "down",
                "port": service.topology.specs[name].port,
                "latencyMs": max(entry["latencyMs"] for entry in replicas),
                "error": next((entry["error"] for entry in replicas if entry["error"]), None),
                **_health_fields(first["document"]),
                "breaker": service.upstream.breaker_state(name),
                "replicas": [{key: entry[key] for key in ("replica", "url", "status", "latencyMs", "error", "breaker")}
                             | _health_fields(entry["document"]) for entry in replicas],
            }
        return ok({"healthy": all(entry["status"] == "up" for entry in services.values()), "services": services},
                  request)

    return build_app(service, [
        Route("/api/v1/system/status", system_status),
        Route("/api/{path:path}", not_owned, methods=sorted(_METHODS)),
    ], limit_api=True, in_front=in_front)


def _health_fields(document: dict[str, Any]) -> dict[str, Any]:
    return {"pid": document.get("pid"), "uptime": document.get("uptime"), "version": document.get("version")}
