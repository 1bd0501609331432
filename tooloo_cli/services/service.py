"""What every service shares: its settings, its resilience modules, its siblings, its app.

A service module builds its app on one `Service`:

    def create(service: Service) -> ASGIApp:
        async def overview(request: Request) -> Response:
            return ok({"domains": ...}, request)
        return build_app(service, [Route("/api/v1/training/overview", overview)])

`build_app(service, routes)` adds /health, /ready, /dependencies, /metrics (Prometheus:
services/metrics.py) and /api/v1/system/observability, the JSON error handlers, the middleware (access log, tracing, rate limit where configured)
and a lifespan that opens the pool and closes everything on SIGTERM: the query optimizer
is flushed, the pool and the cache are closed, the sibling client is closed.

Before it serves, `service.preflight()` checks its database file. A corrupt one is moved
aside and started afresh (with a warning in the log, which `tooloo status` shows) where
the data can be rebuilt; a service whose data cannot be rebuilt (budget's spend ledger)
sets `corrupt_database = "refuse"` and does not start, saying how to fix it (exit 2).

/health says the process lives. /ready says the service's own resources answer (its
database, its cache file), and nothing else: a sibling or the provider being down never
makes it fail, so one failing upstream cannot pull every replica out of service.
/dependencies is the deep check: every replica of every sibling it calls answers its
/ready, and none of its breakers is open (200, else 503 naming what fails).

/ready, /dependencies, the observability document and web's system status give file paths and exception
text only to a caller on this machine that came straight, not through the gateway or a
proxy (`asked_locally`): everyone else reads a short reason, and the detail is in the log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TextIO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from tooloo_cli import __version__
from tooloo_cli.config import LoadedConfig
from tooloo_cli.errors import UsageError
from tooloo_cli.exposition import CONTENT_TYPE, Exposition
from tooloo_cli.resilience import (
    CircuitBreaker,
    ConnectionPool,
    QueryOptimizer,
    SQLiteBatchExecutor,
    Tracer,
    integrity_problem,
    move_aside,
    sqlite_close,
    sqlite_connector,
    sqlite_is_healthy,
)
from tooloo_cli.services.http import RequestDefect, asked_locally, parse_networks
from tooloo_cli.services.metrics import RequestMetrics, metrics_page
from tooloo_cli.services.middleware import ServiceMiddleware
from tooloo_cli.services.routing import ServiceApp
from tooloo_cli.services.sd_notify import Notifier, Notifying
from tooloo_cli.services.stores import make_cache, make_limiter
from tooloo_cli.stack import DEGRADED_HEADER, LIVENESS_PATH, METRICS_PATH, READINESS_PATH, ROLES, stack_of

if TYPE_CHECKING:
    from tooloo_cli.services.otlp import TraceExporter
    from tooloo_cli.services.shared import RedisLink
    from tooloo_cli.services.upstream import Upstream

Hook = Callable[[], Awaitable[None]]
OBSERVABILITY_PATH = "/api/v1/system/observability"
UNAVAILABLE = "unavailable"  # what a remote caller reads instead of a failure's detail
logger = logging.getLogger("tooloo.services")


class ServiceCannotStart(UsageError):
    """The service must not start as things are, and restarting will not help (exit 2)."""


class Service:
    """One running service: its configuration and the modules it embeds (None where it has none)."""

    def __init__(self, name: str, loaded: LoadedConfig, access_log: TextIO | None = None,
                 port: int | None = None) -> None:
        self.name = name
        self.loaded = loaded
        self.access_log = access_log if access_log is not None else sys.stdout
        self.stack = loaded.config.stack
        self.settings = settings = loaded.services[name]
        self.topology = stack_of(loaded)
        self.spec = self.topology.specs[name]
        self.port = settings.port if port is None else port
        self.started = time.monotonic()
        self.trusted_proxies = parse_networks(self.stack.trusted_proxies)
        self.tracer = Tracer(name, settings.tracer.sampling_rate, max_traces=settings.tracer.max_traces,
                             latency_window=settings.tracer.latency_window)
        self.requests = RequestMetrics()  # what the middleware counts of every request (services/metrics.py)
        self.metric_sections: list[Callable[[Exposition], None]] = []  # a service's own families on /metrics
        self.redis = self._redis_link()
        self.limiter = None if settings.rate_limiter is None else make_limiter(
            settings.rate_limiter, name, self.redis, replicas=len(self.spec.replicas))
        self.cache = None if settings.cache is None else make_cache(
            settings.cache, loaded.state_path(settings.cache.file), self.redis, name)
        pool = settings.pool
        self.database = None if pool is None else loaded.state_path(pool.database)
        # What to do with a corrupt database at start: "move-aside" (start afresh) or "refuse".
        self.corrupt_database = "move-aside"
        # Commits survive kill -9 with NORMAL; a service whose rows are money asks for FULL.
        self.database_synchronous = "NORMAL"
        self.pool: ConnectionPool[Any] | None = None if pool is None else ConnectionPool(
            self._connect_database, min_size=pool.min_size, max_size=pool.max_size,
            acquire_timeout=pool.acquire_timeout, idle_timeout=pool.idle_timeout,
            health_check=sqlite_is_healthy, close=sqlite_close, name=f"{name}-db")
        optimizer = settings.query_optimizer
        self.optimizer = None
        if optimizer is not None and self.pool is not None:
            self.optimizer = QueryOptimizer(SQLiteBatchExecutor(self.pool), batch_size=optimizer.batch_size,
                                            batch_window=optimizer.batch_window_ms / 1000)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.unmetered_paths: set[str] = set()  # monitoring endpoints, left out of metrics and limits
        self._upstream: Upstream | None = None
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._ready_checks: dict[str, Hook] = {}
        self._extra_observability: dict[str, Callable[[bool], Any]] = {}
        if self.pool is not None:
            self.ready_check("database", self._check_database)
        if self.cache is not None and not self.cache.remote:  # Redis away is a fallback, not unreadiness
            self.ready_check("cache", self._check_cache)
        if self.spec.calls and settings.breaker is None:
            raise RuntimeError(f"the {name} service calls {', '.join(self.spec.calls)} and needs its breaker settings")
        for called in self.spec.calls:  # listed in the observability document from the start
            for replica in self.topology.specs[called].replicas:
                self.breaker(replica.name)
        # OTLP export of the sampled traces, where an endpoint is set (services/otlp.py).
        self.exporter = self._trace_exporter()

    def _trace_exporter(self) -> TraceExporter | None:
        """The exporter of the sampled traces when [stack] otlp_endpoint or OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT
        is set, wired to the tracer, the lifespan and the observability document (`traceExport`); None
        otherwise. Only an exporter imports opentelemetry-proto: a service that does not export pays nothing."""
        if not (self.stack.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
            return None  # before importing otlp.py, whose ~4 ms a service that does not export would pay
        from tooloo_cli.services.otlp import ExportConfigError, TraceExporter, export_settings

        replica = next((r.name for r in self.spec.replicas if r.port == self.port), self.name)
        try:
            settings = export_settings(self.stack.otlp_endpoint, os.environ, service=self.name, instance=replica)
            if settings is None:
                return None
            exporter = TraceExporter(settings, self.tracer)
        except ExportConfigError as exc:
            raise ServiceCannotStart(f"{self.name}: traces cannot be exported: {exc}") from None
        except ImportError as exc:  # opentelemetry-proto is an extra: this installation lacks it
            raise ServiceCannotStart(f"{self.name}: traces are to be exported ({settings.source} is set), but "
                                     f"opentelemetry-proto cannot be imported ({exc}); pip install 'tooloo[otlp]', "
                                     f"or unset {settings.source}") from None
        self.tracer.on_sampled = exporter.offer
        self.on_startup(exporter.start)
        self.on_shutdown(exporter.close)
        self.extra_observability("traceExport", exporter.section)
        self.extra_metrics(exporter.metrics)
        return exporter

    def _redis_link(self) -> RedisLink | None:
        """The process's link to Redis when [stack] redis_url is set and it has something to share there (a
        limit, a cache, a lease: services/shared.py, leadership.py), else None: a service with nothing to
        share pays nothing for redis-py."""
        role = ROLES.get(self.name)
        leads = role is not None and role.scales_with_redis
        if not self.stack.redis_url or (self.settings.rate_limiter is None and self.settings.cache is None
                                        and not leads):
            return None
        try:
            from tooloo_cli.services.shared import RedisLink
        except ImportError as exc:  # redis-py is an extra: this installation lacks it
            raise ServiceCannotStart(f"{self.name}: [stack] redis_url is set, but redis-py cannot be imported "
                                     f"({exc}); pip install 'tooloo[redis]', or empty redis_url") from None
        return RedisLink(self.stack.redis_url, timeout=self.stack.redis_timeout, fallback=self.stack.redis_fallback)

    def _connect_database(self) -> Any:
        assert self.database is not None
        return sqlite_connector(self.database, synchronous=self.database_synchronous)()

    def preflight(self) -> None:
        """Checks the database file before serving (see the module): moved aside, or ServiceCannotStart."""
        if self.database is None:
            return
        problem = integrity_problem(self.database)
        if problem is None:
            return
        if self.corrupt_database == "refuse":
            path = self.database
            raise ServiceCannotStart(
                f"{self.name}: {path} is not a usable database ({problem}), and it cannot be rebuilt, so "
                f"{self.name} will not replace it. Recover what it holds with "
                f"`sqlite3 {path} .recover | sqlite3 {path}.recovered` and move that into place, or move the "
                f"file aside (`mv {path} {path}.corrupt`) to start empty; then `tooloo up {self.name}`")
        aside = move_aside(self.database)
        logger.warning("%s: the database %s was corrupt (%s); moved it to %s and started afresh",
                       self.name, self.database, problem, aside)

    # -- wiring used by the service modules -------------------------------------------

    def breaker(self, name: str) -> CircuitBreaker:
        """The breaker guarding `name` (created on first use from the service's breaker settings)."""
        breaker = self.breakers.get(name)
        if breaker is None:
            settings = self.settings.breaker
            if settings is None:
                raise RuntimeError(f"the {self.name} service has no breaker settings")
            breaker = self.breakers[name] = CircuitBreaker(
                name, failure_threshold=settings.failure_threshold, reset_timeout=settings.reset_timeout,
                half_open_max_calls=settings.half_open_max_calls, call_timeout=settings.call_timeout,
                excluded=(RequestDefect,))
        return breaker

    @property
    def upstream(self) -> Upstream:
        """The keep-alive client to the siblings it calls (made only by the services that call out)."""
        if self._upstream is None:
            from tooloo_cli.services.upstream import Upstream

            replicas = {called: tuple((replica.name, replica.url) for replica in self.topology.specs[called].replicas
                                      if replica.url is not None)
                        for called in self.spec.calls}
            self._upstream = Upstream(replicas, timeout=self.stack.upstream_timeout, tracer=self.tracer,
                                      breaker=self.breaker)
        return self._upstream

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    def extra_observability(self, name: str, section: Callable[[bool], Any]) -> None:
        """Adds `name` to the observability document: `section(detail)`, each time it is served."""
        self._extra_observability[name] = section

    def extra_metrics(self, section: Callable[[Exposition], None]) -> None:
        """Adds families to GET /metrics: `section(page)` writes them, each time it is scraped."""
        self.metric_sections.append(section)

    def ready_check(self, name: str, check: Hook) -> None:
        """`check` raises when the dependency `name` is not usable; /ready then answers 503."""
        self._ready_checks[name] = check

    # -- lifecycle --------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        notifying = None
        try:
            if self.pool is not None:
                await self.pool.open()
            for hook in self._startup:
                await hook()
            # Started by systemd (`tooloo export systemd`): READY=1 once /ready passes, WATCHDOG=1 while
            # /health does (sd_notify.py); without NOTIFY_SOCKET, nothing.
            if (notifier := Notifier.from_environment()) is not None:
                notifying = Notifying(notifier, self.spec, self.port)
            yield
        finally:
            if notifying is not None:
                await notifying.stop()  # STOPPING=1 first: what follows is the shutdown systemd waits for
            # Every step runs even when one before it failed: a hook that raises must not
            # leave the ledger unflushed or the database open.
            steps: list[tuple[str, Callable[[], Any]]] = [(f"shutdown hook {hook.__qualname__}", hook)
                                                          for hook in reversed(self._shutdown)]
            if self.optimizer is not None:
                steps.append(("flushing the query optimizer", self.optimizer.flush))
            if self.pool is not None:
                steps.append(("closing the pool", self.pool.close))
            if self._upstream is not None:
                steps.append(("closing the sibling client", self._upstream.close))
            if self.cache is not None:
                steps.append(("closing the cache", self.cache.close))
            if self.redis is not None:
                steps.append(("closing the link to Redis", self.redis.close))
            # The last requests' lines, before the process ends (serve's access log is batched).
            steps.append(("flushing the access log", self.access_log.flush))
            for what, step in steps:
                try:
                    outcome = step()
                    if inspect.isawaitable(outcome):
                        await outcome
                except Exception:
                    logger.exception("%s: %s failed during shutdown", self.name, what)

    async def _check_cache(self) -> None:
        assert self.cache is not None
        state = self.cache.shared_state()  # every probe: what the file holds is not counted here
        if not state.persistent:
            raise RuntimeError(f"the cache file {self.cache.path} is unusable ({state.error}); "
                               "caching in memory, retrying the disk")

    async def _check_database(self) -> None:
        assert self.pool is not None
        async with self.pool.acquire(timeout=1.0) as db:
            db.execute("SELECT 1").fetchone()

    # -- the documents every service serves ---------------------------------------------

    def health(self) -> dict[str, Any]:
        return {"ok": True, "service": self.name, "version": __version__, "pid": os.getpid(), "port": self.port,
                "uptime": time.monotonic() - self.started}

    async def observability(self, detail: bool = True) -> dict[str, Any]:
        """SPEC's observability document: seed field names, numbers, null for modules not embedded.

        Without `detail`, failures are named by kind only (no exception text, no file path).
        """
        cache = (await self.cache.asnapshot()).to_dict() if self.cache else None
        if cache is not None and not detail and cache["diskError"] is not None:
            cache["diskError"] = UNAVAILABLE
        return {
            "service": self.name,
            "version": __version__,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self.started,
            "tracer": self.tracer.stats(traces=10),
            "rateLimiter": self.limiter.stats() if self.limiter else None,
            "cache": cache,
            "circuitBreakers": {name: b.status(detail) for name, b in self.breakers.items()}
            if self.settings.breaker is not None else None,
            "pool": self.pool.stats() if self.pool else None,
            "queryOptimizer": self.optimizer.stats() if self.optimizer else None,
            "redis": self.redis_state(detail),
            **{name: section(detail) for name, section in self._extra_observability.items()},
        }

    def degraded_header(self, detail: bool = True) -> dict[str, str] | None:
        """What /ready says besides 200 while Redis is away (the supervisor shows it in `tooloo status`);
        without `detail`, neither the server nor the error."""
        if self.redis is None:
            return None
        state = self.redis.state()
        if state["state"] == "shared":
            return None
        if not detail:
            return {DEGRADED_HEADER: f"Redis cannot be used; what it shares falls back ({state['fallback']})"}
        # A header value: printable ASCII only, whatever the error's text holds.
        reason = "".join(char if " " <= char <= "~" else "?" for char in str(state["error"] or "its breaker is open"))
        return {DEGRADED_HEADER: f"Redis at {state['server']} cannot be used ({reason[:200]}); "
                                 f"what it shares falls back ({state['fallback']})"}

    def redis_state(self, detail: bool = True) -> dict[str, Any] | None:
        """The link to Redis's state (services/shared.py), None without one; without `detail`, no error text."""
        if self.redis is None:
            return None
        state = self.redis.state()
        if not detail and state["error"] is not None:
            state["error"] = UNAVAILABLE
        return state

    async def probe_callees(self, path: str, detail: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Each replica of each sibling it calls, asked `path` directly: status, latency, error, document."""

        async def one(called: str, replica: str, url: str) -> tuple[str, dict[str, Any]]:
            started = time.perf_counter()
            document, error = await self.upstream.probe(url + path)
            if error is not None and not detail:
                error = UNAVAILABLE
            return called, {"replica": replica, "url": url, "status": "up" if error is None else "down",
                            "latencyMs": round((time.perf_counter() - started) * 1000, 2), "error": error,
                            "breaker": self.breakers[replica].state if replica in self.breakers else None,
                            "document": document}

        asked = [one(called, replica, url) for called, replicas in self.upstream.replicas.items()
                 for replica, url in replicas]
        found: dict[str, list[dict[str, Any]]] = {called: [] for called in self.upstream.replicas}
        for called, entry in await asyncio.gather(*asked):
            found[called].append(entry)
        return found

    async def dependencies(self, detail: bool = True) -> dict[str, Any]:
        """The deep check: every called replica's /ready, and the state of every breaker."""
        callees = await self.probe_callees(READINESS_PATH, detail) if self.spec.calls else {}
        failing = [entry["replica"] for replicas in callees.values() for entry in replicas
                   if entry["status"] != "up" or entry["breaker"] == "open"]
        failing += [name for name, breaker in self.breakers.items() if breaker.state == "open" and name not in failing]
        for replicas in callees.values():
            for entry in replicas:
                del entry["document"]
        return {"ok": not failing, "service": self.name, "failing": failing, "services": callees,
                "breakers": {name: breaker.state for name, breaker in self.breakers.items()}}

    async def ready(self, detail: bool = True) -> dict[str, str | None]:
        """Each dependency's failure, or None when it answers; without `detail`, only "unavailable"."""
        failures: dict[str, str | None] = {}
        for name, check in self._ready_checks.items():
            try:
                await check()
                failures[name] = None
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}" if detail else UNAVAILABLE
        return failures


def build_app(service: Service, routes: list[BaseRoute], *, limit_api: bool = False,
              in_front: Callable[[ASGIApp], ASGIApp] | None = None) -> ASGIApp:
    """The service's ASGI app: shared endpoints, its own routes, error handlers, middleware.

    `limit_api` puts the service's rate limiter in front of all of /api (the gateway);
    otherwise a service applies its limiter where its routes choose. `in_front` wraps the
    router in a pure-ASGI layer of the service's own, inside the tracing, limiting and
    access-log middleware (the gateway's proxy, which answers what it passes on itself).
    """

    async def health(request: Request) -> Response:
        return JSONResponse(service.health())

    async def ready(request: Request) -> Response:
        detail = asked_locally(request.scope)
        failures = await service.ready(detail=detail)
        failing = {name: reason for name, reason in failures.items() if reason is not None}
        # Ready either way while Redis is away (the fallback answers), but saying so.
        shared = {"redis": service.redis_state(detail)} if service.redis is not None else {}
        if failing:
            return JSONResponse({"ok": False, "service": service.name, "failing": failing, **shared}, 503)
        return JSONResponse({"ok": True, "service": service.name, "checks": sorted(failures), **shared},
                            headers=service.degraded_header(detail))

    async def dependencies(request: Request) -> Response:
        document = await service.dependencies(detail=asked_locally(request.scope))
        return JSONResponse(document, 200 if document["ok"] else 503)

    async def metrics(request: Request) -> Response:
        cache = await service.cache.asnapshot() if service.cache is not None else None
        return Response(metrics_page(service, cache), media_type=CONTENT_TYPE)

    shared: list[BaseRoute] = [
        Route(LIVENESS_PATH, health),
        Route(READINESS_PATH, ready),
        Route("/dependencies", dependencies),
        Route(METRICS_PATH, metrics),
        observability_route(service, OBSERVABILITY_PATH),
    ]
    all_routes = shared + routes
    app: ASGIApp = ServiceApp(all_routes, lifespan=service.lifespan)
    if in_front is not None:
        app = in_front(app)
    if limit_api and service.limiter is None:
        raise RuntimeError(f"the {service.name} service limits /api but has no rate limiter settings")
    return ServiceMiddleware(app, service.access_log, service.tracer, service.requests, service.stack.max_body_bytes,
                             service.limiter if limit_api else None, service.trusted_proxies,
                             frozenset(service.unmetered_paths))


def observability_route(service: Service, path: str) -> Route:
    """The observability document at `path` (budget serves it at a second path too).

    Whatever path it is served at, it is left out of the request metrics (see ServiceMiddleware).
    """

    async def observability(request: Request) -> Response:
        return JSONResponse(await service.observability(detail=asked_locally(request.scope)))

    service.unmetered_paths.add(path)
    return Route(path, observability)
