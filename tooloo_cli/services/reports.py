"""reports (3008): one comprehensive report fanned out over the other services.

    GET /api/v1/reports/comprehensive     every section, insights, cached for 10 s

The six sections are fetched concurrently (span `fetch-services`), each through its own
breaker; a service that is down gives `null` for its section and an insight saying so,
never a 500. The insights are derived in span `analyze-data`, and the finished report is
kept in a PersistentCache (when complete) so a burst of readers costs one fan-out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tooloo_cli.services.http import ApiError, ok
from tooloo_cli.services.service import Service, build_app

SECTIONS = {
    "training": ("training", "/api/v1/training/overview"),
    "meta": ("meta", "/api/v4/meta-learning/insights"),
    "segmentation": ("segmentation", "/api/v1/segmentation/status"),
    "budget": ("budget", "/api/v1/budget"),
    "coach": ("coach", "/api/v1/auto-coach/status"),
    "capabilities": ("capabilities", "/api/v1/capabilities/status"),
}
CACHE_KEY = "reports:comprehensive"


async def _fetch(service: Service, target: str, path: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        document = await service.upstream.get_json(target, path)
    except ApiError as exc:
        return None, exc.message
    document.pop("traceId", None)
    document.pop("ok", None)
    return document, None


def analyze(sections: dict[str, dict[str, Any] | None], errors: dict[str, str]) -> list[str]:
    """Plain-language insights from whatever sections arrived."""
    insights = [f"{name} is unavailable ({reason}); its section is null" for name, reason in errors.items()]
    training = sections.get("training")
    if training:
        domains = sorted(training.get("domains", []), key=lambda d: d["mastery"])
        if domains:
            insights.append(f"Average mastery is {training.get('averageMastery')} over {len(domains)} domains; "
                            f"the weakest is {domains[0]['name']} ({domains[0]['mastery']})")
    budget = sections.get("budget")
    if budget and budget.get("limitUsd"):
        used = budget["spentUsd"] / budget["limitUsd"]
        insights.append(f"{used:.1%} of today's budget is spent ({budget['calls']} provider calls)")
    coach = sections.get("coach")
    if coach is not None:
        insights.append("The auto-coach is running" if coach.get("active") else "The auto-coach is idle")
    capabilities = sections.get("capabilities")
    if capabilities:
        insights.append(f"{capabilities.get('active')} of {capabilities.get('discovered')} capabilities are active")
    return insights


def create(service: Service) -> ASGIApp:
    assert service.cache is not None
    cache, tracer = service.cache, service.tracer
    for target, _ in SECTIONS.values():
        service.breaker(target)

    async def comprehensive(request: Request) -> Response:
        cached = cache.get(CACHE_KEY)
        if cached is not None:
            return ok({"cached": True, **cached}, request)
        with tracer.span("fetch-services"):
            fetched = await asyncio.gather(*(_fetch(service, target, path) for target, path in SECTIONS.values()))
        sections = {name: document for name, (document, _) in zip(SECTIONS, fetched)}
        errors = {name: error for name, (_, error) in zip(SECTIONS, fetched) if error is not None}
        with tracer.span("analyze-data"):
            report = {
                "generatedAt": time.time(),
                "available": len(SECTIONS) - len(errors),
                "sections": sections,
                "insights": analyze(sections, errors),
            }
        if not errors:  # a partial report is not kept: recovery shows at once, and open breakers keep it cheap
            cache.set(CACHE_KEY, report)
        return ok({"cached": False, **report}, request)

    return build_app(service, [Route("/api/v1/reports/comprehensive", comprehensive)])
