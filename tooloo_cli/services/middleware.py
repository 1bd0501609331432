"""The middleware of every service: one pure-ASGI layer around the router.

    app = ServiceMiddleware(router, access_log, tracer, requests, max_body, limiter, trusted_proxies, unmetered)

- Every request but the liveness probes of /health and the scrapes of /metrics gets one
  access-log line (method, raw path, status, ms, traceId) and is counted in the request
  metrics (services/metrics.py). The monitoring paths in `unmetered` are not counted, and
  they and the readiness probe of /ready (which the supervisor asks every probe interval)
  are logged only when a poll fails (4xx, 5xx, or the client left unanswered).
  Every request's unexpected exception, those two paths' too, is logged and becomes a
  JSON 500 (unless the answer had begun), never a stack trace: this is the service's one
  server-error layer (services/routing.py).
- Every request under /api (but the monitoring paths in `unmetered`) is traced (W3C Trace
  Context Level 2): `traceparent` read from the request and written on the response,
  `tracestate` kept for the calls the request makes (two `traceparent` headers start a new
  trace; several `tracestate` headers are one list), a 5xx marks the trace as an error. Where the service limits all of /api (the gateway), it is also rate limited
  per client: X-RateLimit-* headers on every limited response, 429 + Retry-After on denial.
  A response that already carries X-RateLimit-* headers (a sibling's own limit, passed on
  by the gateway) keeps them: they describe the limit the client actually met. A declared
  body over `max_body` is refused with 413 whether or not the route would read it.

Why one layer and not one per concern: on a small route what the middleware costs is most
of what a service loses against its bare Starlette route (`tooloo bench http`), and each
layer is another coroutine call and another send wrapper for each of a request's messages.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tooloo_cli.resilience import RateLimiter, Trace, Tracer, format_traceparent
from tooloo_cli.services.http import Network, client_id, error_response, rate_limit_header_bytes, rate_limited
from tooloo_cli.services.metrics import RequestMetrics, known_method, matched_route, route_template
from tooloo_cli.stack import LIVENESS_PATH, METRICS_PATH, READINESS_PATH

logger = logging.getLogger("tooloo.services")
# Paths answered without a trace, a limit, an access-log line or a count: the liveness probe, polled
# every interval, and the metrics page, whose scrapes would otherwise be most of what it counts.
_QUIET = frozenset({LIVENESS_PATH, METRICS_PATH})


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, out: TextIO, tracer: Tracer, requests: RequestMetrics, max_body: int,
                 limiter: RateLimiter | None = None, trusted_proxies: tuple[Network, ...] = (),
                 unmetered: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.out = out
        self.tracer = tracer
        self.requests = requests
        self.max_body = max_body
        self.limiter = limiter
        self.shared_limit = limiter is not None and limiter.shared
        self.trusted_proxies = trusted_proxies
        # Monitoring paths (the observability documents): polling them every second must not
        # show up as traffic in the very metrics it reads, nor spend the clients' tokens.
        self.unmetered = unmetered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        quiet = scope["path"] in _QUIET
        started = perf_counter()
        status = 0
        trace: Trace | None = None
        traceparent: tuple[bytes, bytes] = (b"", b"")
        limit_headers: list[tuple[bytes, bytes]] = []

        async def send_noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if trace is not None:
                    if trace.sampled:  # its attributes were made as it began (below)
                        attributes = trace.attributes
                        route = matched_route(scope)
                        if route is not None:
                            attributes["http.route"] = route
                        attributes["http.response.status_code"] = status
                    if status >= 500 and trace.status == "ok":  # an exception has named itself already
                        trace.fail(f"HTTP {status}")
                    headers = [*message.get("headers", ()), traceparent]
                    if limit_headers and not any(name == b"x-ratelimit-limit" for name, _ in headers):
                        headers += limit_headers
                    message["headers"] = headers
            await send(message)

        path = scope["path"]
        monitoring = path in self.unmetered
        try:
            if quiet or not (path == "/api" or path.startswith("/api/")) or monitoring:
                await self.app(scope, receive, send_noted)
                return
            incoming = None
            tracestate = None
            declared = 0
            for name, value in scope["headers"]:
                if name == b"traceparent":
                    # Two traceparent headers make neither valid ("" starts a new trace), never "last one wins".
                    incoming = value.decode("latin-1") if incoming is None else ""
                elif name == b"content-length" and value.isdigit():
                    declared = int(value)
                elif name == b"tracestate":  # several headers are one list, in their order (RFC 9110 5.3)
                    tracestate = value.decode("latin-1") if tracestate is None else \
                        f"{tracestate},{value.decode('latin-1')}"
            with self.tracer.trace(f"{scope['method']} {path}", incoming, tracestate) as trace:
                scope.setdefault("state", {})["trace_id"] = trace.trace_id
                if trace.sampled:  # the HTTP semantic conventions' names, as an OTLP export shows them
                    # One dict made whole, not a Span.set call for each: what sampling costs a request is
                    # mostly calls (`tooloo bench http`: samplingCost).
                    method = scope["method"]
                    attributes = {"http.request.method": known_method(method), "url.path": path,
                                  "url.scheme": scope.get("scheme", "http")}
                    if attributes["http.request.method"] != method:  # it was named _OTHER
                        attributes["http.request.method_original"] = method
                    trace.attributes = attributes
                traceparent = (b"traceparent",
                               format_traceparent(trace.trace_id, trace.span_id, trace.sampled,
                                                  trace.random).encode())
                if self.limiter is not None:
                    client = client_id(scope, self.trusted_proxies)
                    # Over Redis, a round trip (services/shared.py); else the in-process hot path.
                    decision = await self.limiter.check(client) if self.shared_limit else \
                        self.limiter.try_acquire(client)
                    if not decision.allowed:
                        await rate_limited(decision, trace.trace_id)(scope, receive, send_noted)
                        return
                    limit_headers = rate_limit_header_bytes(decision)
                if declared > self.max_body:  # refused whether or not the route would read the body
                    too_large = error_response(413, f"request body over the {self.max_body}-byte limit",
                                               trace.trace_id)
                    await too_large(scope, receive, send_noted)
                    return
                await self.app(scope, receive, send_noted)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], path)
            # Nothing sent yet: answer properly (with its traceparent, noting the 500). The trace has ended
            # (its exception recorded): what send_noted adds to it comes before anything reads it.
            if status == 0:
                response = error_response(500, "internal error", None if trace is None else trace.trace_id)
                await response(scope, receive, send_noted)
        finally:
            if not quiet:
                elapsed = perf_counter() - started
                if status and not monitoring:  # no status: the client left before any answer
                    self.requests.observe(scope["method"], route_template(scope), status, elapsed)
                # A monitoring poll answered is no event (`observe --watch` makes one a second, most of
                # a quiet service's lines); one that failed or was left unanswered still is.
                if not (monitoring or path == READINESS_PATH) or not 0 < status < 400:
                    # The raw (still percent-encoded) path: a decoded one could carry a newline and forge a line.
                    raw = scope.get("raw_path", b"").decode("latin-1") or repr(path)
                    self.out.write(f"{scope['method']} {raw} {status} {elapsed * 1000:.1f}ms "
                                   f"{'-' if trace is None else trace.trace_id}\n")
