"""Pure-ASGI middleware of every service, outermost first.

    app = AccessLogMiddleware(ApiMiddleware(router, tracer, max_body, limiter, trusted_proxies), out)

- AccessLogMiddleware: one line per request (method, path, status, ms, traceId) and the
  last line of defence: an exception becomes a JSON 500, never a stack trace.
- ApiMiddleware: every request under /api is traced (`traceparent` read from the request
  and written on the response; a 5xx marks the trace as an error) and, where the service
  limits all of /api, rate limited per client: X-RateLimit-* headers on every limited
  response, 429 + Retry-After on denial. A response that already carries X-RateLimit-*
  headers (a sibling's own limit, passed on by the gateway) keeps them: they describe
  the limit the client actually met.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tooloo_cli.resilience import RateLimiter, Tracer, format_traceparent
from tooloo_cli.services.http import Network, client_id, error_response, rate_limit_header_bytes, rate_limited, trace_id_of

logger = logging.getLogger("tooloo.services")


def _state(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})


def _traced(scope: Scope) -> bool:
    return scope["type"] == "http" and (scope["path"] == "/api" or scope["path"].startswith("/api/"))


class AccessLogMiddleware:
    """One line per request, except the liveness probes of /health (every few seconds, forever)."""

    def __init__(self, app: ASGIApp, out: TextIO) -> None:
        self.app = app
        self.out = out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if status == 0:  # nothing sent yet: answer properly
                status = 500
                response = error_response(500, "internal error", trace_id_of(scope))
                await response(scope, receive, send)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            trace = trace_id_of(scope) or "-"
            # The raw (still percent-encoded) path: a decoded one could carry a newline and forge a line.
            path = scope.get("raw_path", b"").decode("latin-1") or repr(scope["path"])
            self.out.write(f"{scope['method']} {path} {status} {elapsed:.1f}ms {trace}\n")


class ApiMiddleware:
    """Everything under /api: traced, and limited per client when a limiter is given.

    One layer, one send wrapper: on a tiny route the per-request cost of the policy is
    what the gateway's throughput is made of.
    """

    def __init__(self, app: ASGIApp, tracer: Tracer, max_body: int, limiter: RateLimiter | None = None,
                 trusted_proxies: tuple[Network, ...] = (), unmetered: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.tracer = tracer
        self.max_body = max_body
        self.limiter = limiter
        self.trusted_proxies = trusted_proxies
        # Monitoring paths (the observability documents): polling them every second must not
        # show up as traffic in the very metrics it reads, nor spend the clients' tokens.
        self.unmetered = unmetered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _traced(scope) or scope["path"] in self.unmetered:
            await self.app(scope, receive, send)
            return
        incoming = None
        declared = 0
        for name, value in scope["headers"]:
            if name == b"traceparent":
                incoming = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                declared = int(value)
        with self.tracer.trace(f"{scope['method']} {scope['path']}", incoming) as trace:
            _state(scope)["trace_id"] = trace.trace_id
            traceparent = (b"traceparent", format_traceparent(trace.trace_id, trace.span_id, trace.sampled).encode())
            limit_headers: list[tuple[bytes, bytes]] = []

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if trace.sampled:
                        trace.set("status", status)
                    if status >= 500:
                        trace.fail(f"HTTP {status}")
                    headers = [*message.get("headers", ()), traceparent]
                    if limit_headers and not any(name == b"x-ratelimit-limit" for name, _ in headers):
                        headers += limit_headers
                    message["headers"] = headers
                await send(message)

            if self.limiter is not None:
                decision = self.limiter.try_acquire(client_id(scope, self.trusted_proxies))
                if not decision.allowed:
                    await rate_limited(decision, trace.trace_id)(scope, receive, send_with_headers)
                    return
                limit_headers = rate_limit_header_bytes(decision)
            if declared > self.max_body:  # refused whether or not the route would read the body
                too_large = error_response(413, f"request body over the {self.max_body}-byte limit", trace.trace_id)
                await too_large(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
