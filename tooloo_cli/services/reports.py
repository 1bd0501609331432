"""reports (3008): one comprehensive report fanned out over the other services.

    GET /api/v1/reports/comprehensive     every section, insights, cached for 10 s

    $ curl -s localhost:3008/api/v1/reports/comprehensive | jq .insights

The sections (one per service the topology gives a report path) are fetched concurrently
(span `fetch-services`), each through its replicas' breakers; a service that is down gives `null` for its section and an insight saying so,
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

from tooloo_cli.resilience import SingleFlight
from tooloo_cli.services.http import ApiError, ok
from tooloo_cli.services.service import Service, build_app
from tooloo_cli.stack import report_sections

SECTIONS = report_sections()  # section (the service it comes from) → the path fetched for it
CACHE_KEY = "reports:comprehensive"


async def _fetch(service: Service, target: str, path: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        return await service.upstream.json(target, "GET", path), None
    except ApiError as exc:
        return None, exc.message


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def analyze(sections: dict[str, dict[str, Any] | None], errors: dict[str, str]) -> list[str]:
    """Plain-language insights from whatever sections arrived; a section of an unexpected shape says nothing."""
    insights = [f"{name} is unavailable ({reason}); its section is null" for name, reason in errors.items()]
    training = sections.get("training") or {}
    domains = [d for d in training.get("domains", []) if isinstance(d, dict) and _number(d.get("mastery")) is not None]
    if domains:
        weakest = min(domains, key=lambda d: d["mastery"])
        insights.append(f"Average mastery is {training.get('averageMastery')} over {len(domains)} domains; "
                        f"the weakest is {weakest.get('name')} ({weakest['mastery']})")
    budget = sections.get("budget") or {}
    spent, limit = _number(budget.get("spentUsd")), _number(budget.get("limitUsd"))
    if spent is not None and limit:
        insights.append(f"{spent / limit:.1%} of today's budget is spent ({budget.get('calls', 0)} provider calls)")
    coach = sections.get("coach")
    if coach is not None:
        insights.append("The auto-coach is running" if coach.get("active") else "The auto-coach is idle")
    capabilities = sections.get("capabilities") or {}
    if _number(capabilities.get("discovered")) is not None:
        insights.append(f"{capabilities.get('active')} of {capabilities.get('discovered')} capabilities are active")
    return insights


def create(service: Service) -> ASGIApp:
    if service.cache is None:
        raise RuntimeError("the reports service needs its [services.reports.cache] settings")
    cache, tracer = service.cache, service.tracer
    flight = SingleFlight()

    async def build_report() -> dict[str, Any]:
        with tracer.span("fetch-services"):
            fetched = await asyncio.gather(*(_fetch(service, target, path) for target, path in SECTIONS.items()))
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
            await cache.aset(CACHE_KEY, report)
        return report

    async def comprehensive(request: Request) -> Response:
        cached = await cache.aget(CACHE_KEY)
        if cached is not None:
            return ok({"cached": True, **cached}, request)
        report = await flight.do(CACHE_KEY, build_report)  # readers arriving together share one fan-out
        return ok({"cached": False, **report}, request)

    return build_app(service, [Route("/api/v1/reports/comprehensive", comprehensive)])
