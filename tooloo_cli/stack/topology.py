"""Who does what in the stack: which /api routes each built-in service owns, what the
report fans out to, who calls whom, and who must run as a single process (or, given
Redis, may run as several of which one leads: services/leadership.py).

    owner_of("/api/v1/budget")          # "budget"
    route_of("/api/v1/providers/burst") # ("/api/v1/providers/", "budget")
    report_sections()                   # {"training": "/api/v1/training/overview", ...}
    callees("meta")                     # ("training",)

The services themselves are declared once, by the configuration's defaults
(`tooloo_cli.config.BUILTIN_SERVICES`); this table says only what each of them does for
the others, keyed by the same names (a test holds the two together). The gateway routes
to every service that owns a route; reports fetches every service that has a section.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    routes: tuple[str, ...] = ()  # /api path prefixes the gateway passes to this service
    report: str | None = None  # the path the comprehensive report fetches for its section
    calls: tuple[str, ...] = ()  # the siblings it calls, beyond those derived below
    single_process: str | None = None  # why it cannot run as several replicas, if it cannot
    scales_with_redis: bool = False  # ... unless [stack] redis_url is set: one leads, the others stand by
    routes_everything: bool = False  # the gateway: calls every service that owns a route
    reports_everything: bool = False  # reports: calls every service that has a section


ROLES: dict[str, Role] = {
    "web": Role(routes_everything=True),
    "training": Role(routes=("/api/v1/training/",), report="/api/v1/training/overview",
                     single_process="its mastery lives in its process"),
    "meta": Role(routes=("/api/v4/meta-learning/",), report="/api/v4/meta-learning/insights", calls=("training",)),
    "budget": Role(routes=("/api/v1/providers/", "/api/v1/budget"), report="/api/v1/budget"),
    "coach": Role(routes=("/api/v1/auto-coach/",), report="/api/v1/auto-coach/status", calls=("training",),
                  single_process="two coaches' loops would drive training twice", scales_with_redis=True),
    "segmentation": Role(routes=("/api/v1/segmentation/",), report="/api/v1/segmentation/status"),
    "reports": Role(routes=("/api/v1/reports/",), reports_everything=True),
    "capabilities": Role(routes=("/api/v1/capabilities/",), report="/api/v1/capabilities/status",
                         single_process="its activations live in a database one process owns"),
}

ROUTES: tuple[tuple[str, str], ...] = tuple((prefix, name) for name, role in ROLES.items() for prefix in role.routes)


def route_of(path: str) -> tuple[str, str] | None:
    """The gateway route an /api path takes: (the path prefix, the service that owns it), or None."""
    for prefix, owner in ROUTES:
        if path.startswith(prefix):
            return prefix, owner
    return None


def owner_of(path: str) -> str | None:
    """The service that owns an /api path, or None."""
    route = route_of(path)
    return None if route is None else route[1]


def report_sections() -> dict[str, str]:
    """Section name (the service) → the path the report fetches from it."""
    return {name: role.report for name, role in ROLES.items() if role.report is not None}


def callees(name: str) -> tuple[str, ...]:
    """The built-in services `name` calls (none for a service that is not one of the eight)."""
    role = ROLES.get(name)
    if role is None:
        return ()
    called = list(role.calls)
    if role.routes_everything:
        called += [owner for _, owner in ROUTES]
    if role.reports_everything:
        called += list(report_sections())
    return tuple(dict.fromkeys(called))
